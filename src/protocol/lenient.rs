//! Typed JSON reading with the leniency of `serde_json::Value`'s accessors.
//!
//! A decoder that reads a body into a [`serde_json::Value`] builds a map per
//! object and a string per key and value, most of which it never looks at.
//! Typed structs read only the fields they name and skip the rest without
//! building anything. But a typed field of the wrong type fails the whole
//! parse, where `value.get("x").and_then(Json::as_str)` gives None. The types
//! here read a field the way those accessors do, so that a typed decoder gives
//! the same record as the generic one; what they cannot read that way (a
//! struct given as an array, a duplicate key) is an error, after which the
//! decoder reads the body the generic way.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One field of any type: absent, or present with a string, number or bool
/// (null, arrays and objects are `Other`).
#[derive(Debug, Default, Clone, PartialEq)]
pub enum Scalar {
    #[default]
    Absent,
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Other,
}

impl Scalar {
    /// `Json::as_str`.
    pub fn into_string(self) -> Option<String> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    /// `Json::as_str`, borrowed.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    /// `Json::as_f64`: any number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::U64(n) => Some(n as f64),
            Scalar::I64(n) => Some(n as f64),
            Scalar::F64(n) => Some(n),
            _ => None,
        }
    }

    /// `Json::as_u64`: a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Scalar::U64(n) => Some(n),
            _ => None,
        }
    }

    /// `Json::as_bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Scalar::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Whether the key was in the object at all (`Json::get(..).is_some()`).
    pub fn is_present(&self) -> bool {
        !matches!(self, Scalar::Absent)
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(s))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Scalar, E> {
                Ok(Scalar::U64(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar::I64(n))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Scalar, E> {
                Ok(Scalar::F64(n))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(b))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A typed struct read from a JSON object only: serde's derive also reads a
/// struct from an array, field by field, where `Json::get` finds nothing.
#[derive(Debug)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Object<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(PhantomData)).map(Object)
    }
}

/// The texts of a string or of an array's items (`items` reads each one):
/// an OpenAI message's `content` or a completion's `prompt`. Null, numbers
/// and objects are `None`.
#[derive(Debug)]
pub enum Texts<T> {
    One(String),
    Many(Vec<T>),
    None,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Texts<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Texts<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Texts<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array")
            }
            fn visit_str<E>(self, s: &str) -> Result<Texts<T>, E> {
                Ok(Texts::One(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Texts<T>, E> {
                Ok(Texts::One(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Texts<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Texts::Many(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Texts<T>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Texts::None)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Texts<T>, E> {
                Ok(Texts::None)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Texts<T>, E> {
                Ok(Texts::None)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Texts<T>, E> {
                Ok(Texts::None)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Texts<T>, E> {
                Ok(Texts::None)
            }
            fn visit_unit<E>(self) -> Result<Texts<T>, E> {
                Ok(Texts::None)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct S {
        #[serde(default)]
        a: Scalar,
        #[serde(default)]
        b: Scalar,
    }

    #[test]
    fn scalars_read_like_value_accessors() {
        let s: S = serde_json::from_str(r#"{"a":null,"x":[1,{"y":2}]}"#).unwrap();
        assert_eq!(s.a, Scalar::Other);
        assert!(s.a.is_present() && !s.b.is_present());
        let s: S = serde_json::from_str(r#"{"a":"t\"x","b":-3}"#).unwrap();
        assert_eq!(s.a.as_str(), Some("t\"x"));
        assert_eq!((s.b.as_u64(), s.b.as_f64()), (None, Some(-3.0)));
        let s: S = serde_json::from_str(r#"{"a":7,"b":[true]}"#).unwrap();
        assert_eq!(
            (s.a.as_u64(), s.a.as_f64(), s.a.as_str()),
            (Some(7), Some(7.0), None)
        );
        assert_eq!(s.b, Scalar::Other);
        let s: S = serde_json::from_str(r#"{"a":1.5,"b":false}"#).unwrap();
        assert_eq!((s.a.as_u64(), s.a.as_f64()), (None, Some(1.5)));
        assert_eq!(s.b.as_bool(), Some(false));
    }

    #[test]
    fn objects_only_and_texts() {
        assert!(serde_json::from_str::<Object<S>>(r#"["x",1]"#).is_err());
        assert!(
            serde_json::from_str::<S>(r#"["x",1]"#).is_ok(),
            "what Object guards against"
        );
        let o: Object<S> = serde_json::from_str(r#"{"b":"y"}"#).unwrap();
        assert_eq!(o.0.b.as_str(), Some("y"));
        let t: Texts<Scalar> = serde_json::from_str(r#"["a",1,null,"b"]"#).unwrap();
        match t {
            Texts::Many(items) => assert_eq!(
                items.iter().filter_map(Scalar::as_str).collect::<Vec<_>>(),
                ["a", "b"]
            ),
            other => panic!("{other:?}"),
        }
        for none in ["null", "3", "{\"text\":\"x\"}", "true"] {
            let t: Texts<Scalar> = serde_json::from_str(none).unwrap();
            assert!(matches!(t, Texts::None), "{none}");
        }
        let t: Texts<Scalar> = serde_json::from_str(r#""a\nb""#).unwrap();
        assert!(matches!(t, Texts::One(s) if s == "a\nb"));
    }
}
