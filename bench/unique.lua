-- wrk: every request to a path of its own (/sf/1, /sf/2, ...), so that no two
-- requests share a key. Run with one wrk thread.
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", wrk.path .. n)
end
