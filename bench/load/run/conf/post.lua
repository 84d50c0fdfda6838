wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{"model":"stand-in-model-7b","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the following paragraph in one sentence: the quick brown fox jumps over the lazy dog, again and again, until the dog finally wakes up."}],"max_tokens":128,"temperature":0.2}]]
