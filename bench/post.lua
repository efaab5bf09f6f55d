-- wrk: every request a POST (reject mode guards only unsafe methods).
wrk.method = "POST"
