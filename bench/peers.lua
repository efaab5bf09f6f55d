-- wrk: every request to a path of its own (PATH<thread>-1, PATH<thread>-2,
-- ...), so that no two requests share a key, whatever the number of wrk
-- threads (each thread counts on its own). Give every run its own PATH for
-- keys no earlier run used.
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", wrk.path .. id .. "-" .. n)
end
