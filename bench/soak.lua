-- wrk: the soak's mixed traffic (bench/soak.py). Each request takes the next
-- kind in a fixed schedule; unique keys are numbered, under a prefix given as
-- the script's argument (a run's keys are new to the server). Counts what it
-- sent by kind and what came back by status, and prints them at the end as
-- one line: `SOAK {json}`. Run with one wrk thread (counts are summed over
-- threads all the same).
--
--   sf_unique    GET  /sf/{prefix}-u{n}           share mode, a key of its own
--   sf_hot       GET  /sf/hot                     share mode, one key for all
--   cached_hit   GET  /cached/hot                 a cache hit
--   cached_miss  GET  /cached/{prefix}-m{n}       a miss that fills the cache
--   reject       POST /reject/j{0..3}?ms=20       reject mode: 409s while held
--   nostore_hot  GET  /nostore/hot?ms=2           unshareable, one key
--   nostore_uniq GET  /nostore/{prefix}-n{n}?ms=2 unshareable, a key each

local schedule = {
  "sf_unique", "cached_hit", "sf_hot", "cached_miss",
  "sf_unique", "cached_hit", "reject", "sf_hot",
  "cached_miss", "nostore_hot", "sf_unique", "cached_hit",
  "sf_hot", "cached_miss", "reject", "nostore_uniq",
}

local prefix = "soak"
local n = 0
sent = {}
statuses = {}

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  if args[1] then
    prefix = args[1]
  end
  for _, kind in ipairs(schedule) do
    sent[kind] = 0
  end
end

request = function()
  n = n + 1
  local kind = schedule[(n - 1) % #schedule + 1]
  sent[kind] = sent[kind] + 1
  if kind == "sf_unique" then
    return wrk.format("GET", "/sf/" .. prefix .. "-u" .. n)
  elseif kind == "sf_hot" then
    return wrk.format("GET", "/sf/hot")
  elseif kind == "cached_hit" then
    return wrk.format("GET", "/cached/hot")
  elseif kind == "cached_miss" then
    return wrk.format("GET", "/cached/" .. prefix .. "-m" .. n)
  elseif kind == "reject" then
    return wrk.format("POST", "/reject/j" .. (n % 4) .. "?ms=20")
  elseif kind == "nostore_hot" then
    return wrk.format("GET", "/nostore/hot?ms=2")
  else
    return wrk.format("GET", "/nostore/" .. prefix .. "-n" .. n .. "?ms=2")
  end
end

response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local function add(into, from)
  for key, value in pairs(from) do
    into[key] = (into[key] or 0) + value
  end
end

local function object(map)
  local parts = {}
  for key, value in pairs(map) do
    table.insert(parts, string.format('"%s":%d', tostring(key), value))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local all_sent, all_statuses = {}, {}
  for _, thread in ipairs(threads) do
    add(all_sent, thread:get("sent"))
    add(all_statuses, thread:get("statuses"))
  end
  local errors = summary.errors
  io.write(string.format(
    'SOAK {"sent":%s,"statuses":%s,"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    object(all_sent), object(all_statuses), summary.requests, summary.duration,
    summary.bytes, errors.connect, errors.read, errors.write, errors.status,
    errors.timeout, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
