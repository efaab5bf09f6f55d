-- wrk: every request to a path of its own (/sf/0-1, /sf/0-2, ...), so that
-- no two requests share a key, whatever the number of wrk threads (each
-- thread counts under its own prefix). WRK_METHOD sets the method (GET).
local threads = 0
function setup(thread)
  thread:set("prefix", threads .. "-")
  threads = threads + 1
end

local method = os.getenv("WRK_METHOD") or "GET"
local n = 0
request = function()
  n = n + 1
  return wrk.format(method, wrk.path .. prefix .. n)
end
