//! Shadow traffic (filled in below).
