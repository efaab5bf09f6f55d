-- wrk: the same path every time, built per request as bench/unique.lua
-- builds its own, so that both sides of a comparison cost the client the
-- same. Run with one wrk thread.
request = function()
  return wrk.format("GET", wrk.path)
end
