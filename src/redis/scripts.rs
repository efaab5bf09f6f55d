//! The Lua scripts that make each lease operation one atomic round trip.
//!
//! Every script that changes a lease first compares the caller's random
//! token with the one stored under the lease: a holder whose lease expired
//! and passed on can never release, renew or report over its successor.
//! Times are read from Redis's own clock (`TIME`, `PTTL`), never compared
//! with a replica's.

// The caches' tiers use some of these only with the `cache` feature.
#![cfg_attr(not(feature = "cache"), allow(dead_code))]

use std::sync::LazyLock;

use redis::Script;

/// Shared by the scripts that describe a holder: the reply is
/// `{fence, gen, since_ms, now_ms, pttl_ms, contended, replica, progress, nonce}`,
/// every field a string.
macro_rules! prelude {
    () => {
        r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function describe(lease, holder)
  local h = redis.call('HMGET', holder, 'fence', 'gen', 'since', 'contended', 'replica', 'progress', 'nonce')
  return {h[1] or '0', h[2] or '0', h[3] or '0', tostring(now_ms()),
          tostring(redis.call('PTTL', lease)), h[4] or '0', h[5] or '', h[6] or '', h[7] or ''}
end
"#
    };
}

/// KEYS: lease, holder, fence. ARGV: nonce, ttl_ms, replica, tombstone_ms.
/// `{'1', fence, gen}` when taken, else `{'0', <holder>...}`.
pub(crate) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prelude!(),
        r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[3])
  local gen = redis.call('HINCRBY', KEYS[2], 'gen', 1)
  redis.call('HDEL', KEYS[2], 'progress')
  redis.call('HSET', KEYS[2], 'nonce', ARGV[1], 'fence', fence, 'since', now_ms(),
             'replica', ARGV[3], 'contended', '0')
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[4]))
  return {'1', tostring(fence), tostring(gen)}
end
redis.call('HSET', KEYS[2], 'contended', '1')
local holder = describe(KEYS[1], KEYS[2])
table.insert(holder, 1, '0')
return holder
"#
    ))
});

/// KEYS: lease, holder. ARGV: nonce, tombstone_ms. 1 when released.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], 'progress')
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// KEYS: lease, holder. ARGV: nonce, ttl_ms, tombstone_ms. 1 when renewed.
pub(crate) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[3]))
  return 1
end
return 0
"#,
    )
});

/// KEYS: lease, holder. ARGV: nonce, progress JSON. 1 when recorded.
pub(crate) static PROGRESS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('HSET', KEYS[2], 'progress', ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// KEYS: lease, holder. `<holder>` while held, else `{}`.
pub(crate) static HOLDER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prelude!(),
        r#"
local nonce = redis.call('GET', KEYS[1])
if not nonce or redis.call('HGET', KEYS[2], 'nonce') ~= nonce then
  return {}
end
return describe(KEYS[1], KEYS[2])
"#
    ))
});

/// KEYS: lease, holder. ARGV: fence of the holding to match ('' for any),
/// tombstone_ms, its generation.
/// The holding it ended, else `{}`.
pub(crate) static FORCE_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prelude!(),
        r#"
if not redis.call('GET', KEYS[1]) then
  return {}
end
local holder = describe(KEYS[1], KEYS[2])
if ARGV[1] ~= '' and (holder[1] ~= ARGV[1] or holder[2] ~= ARGV[3]) then
  return {}
end
redis.call('DEL', KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return holder
"#
    ))
});

/// A cluster flight's one step for a local leader. KEYS: lease, fence. ARGV:
/// watched fence ('' for none), nonce, lease_ms, answer name prefix.
/// `{'answer', bytes}` when the watched flight published; `{'wait', fence,
/// pttl}` while someone leads; else the lease is taken: `{'lead', fence}`.
pub(crate) static FLIGHT_STEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if ARGV[1] ~= '' then
  local answer = redis.call('GET', ARGV[4] .. ARGV[1])
  if answer then
    return {'answer', answer}
  end
end
local current = redis.call('GET', KEYS[1])
if current then
  return {'wait', string.match(current, '^(%d+):') or '', tostring(redis.call('PTTL', KEYS[1]))}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], fence .. ':' .. ARGV[2], 'PX', ARGV[3])
return {'lead', tostring(fence)}
"#,
    )
});

/// Ends a cluster flight leader's lease. KEYS: lease. ARGV: the lease's
/// whole value (`fence:nonce`), whether there is an answer ('1'), the
/// answer, its ttl_ms, its name, the channel, the message. The lease is
/// deleted only if it is still this holding's.
pub(crate) static FLIGHT_END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if ARGV[2] == '1' then
  redis.call('SET', ARGV[5], ARGV[3], 'PX', ARGV[4])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('PUBLISH', ARGV[6], ARGV[7])
return 1
"#,
    )
});

/// Gives up a lease a timed-out step took. KEYS: lease. ARGV: the step's
/// nonce, the channel, the message.
pub(crate) static FLIGHT_ABANDON: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('GET', KEYS[1])
if current and string.match(current, ':(%x+)$') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"#,
    )
});

/// Extends a cluster flight leader's lease while it works. KEYS: lease.
/// ARGV: the lease's whole value, ttl_ms. 1 when it is still this holding's.
pub(crate) static FLIGHT_RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// Stores a `ValueCache` value with the time, by Redis's clock, unless it
/// was invalidated since the computation read its count. KEYS: name,
/// epoch. ARGV: value, lifetime_ms, the count read. 1 when stored.
pub(crate) static VALUE_PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prelude!(),
        r#"
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'at', now_ms())
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#
    ))
});

/// A `ValueCache` key's invalidation count, then its value and age (ms) if
/// stored: `{count}` or `{count, value, age}`. KEYS: name, epoch.
pub(crate) static VALUE_GET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prelude!(),
        r#"
local count = redis.call('GET', KEYS[2]) or '0'
local found = redis.call('HMGET', KEYS[1], 'v', 'at')
if not found[1] or not found[2] then
  return {count}
end
return {count, found[1], tostring(math.max(0, now_ms() - tonumber(found[2])))}
"#
    ))
});

/// Deletes a `ValueCache` value, counts the invalidation (the count lives
/// two hours: a computation that read it before cannot store after), and
/// tells every replica. KEYS: name, epoch. ARGV: channel, message.
pub(crate) static VALUE_DROP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 7200000)
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"#,
    )
});

/// The invalidation counts now, then, if an entry stored since the last
/// invalidation exists, it and how long it has aged (ms): `{all, path}` or
/// `{all, path, answer, aged}`. KEYS: entry, all-epoch, path-epoch.
pub(crate) static RESPONSE_GET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prelude!(),
        r#"
local all = redis.call('GET', KEYS[2]) or '0'
local path = redis.call('GET', KEYS[3]) or '0'
local found = redis.call('HMGET', KEYS[1], 'v', 'at', 'all', 'path')
if not found[1] or not found[2] then
  return {all, path}
end
if found[3] ~= all or found[4] ~= path then
  redis.call('DEL', KEYS[1])
  return {all, path}
end
return {all, path, found[1], tostring(math.max(0, now_ms() - tonumber(found[2])))}
"#
    ))
});

/// Stores a response with the time its age runs from, unless an
/// invalidation came since the leader read the counts. KEYS: entry,
/// all-epoch, path-epoch. ARGV: answer, keep_ms, the milliseconds it has
/// aged already, the counts the leader read (all, path). 1 when stored.
pub(crate) static RESPONSE_PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        prelude!(),
        r#"
local all = redis.call('GET', KEYS[2]) or '0'
local path = redis.call('GET', KEYS[3]) or '0'
if all ~= ARGV[4] or path ~= ARGV[5] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'at', now_ms() - tonumber(ARGV[3]), 'all', all, 'path', path)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#
    ))
});

/// Counts an invalidation and tells every replica. KEYS: epoch. ARGV:
/// channel, message, how long a path's count lives (ms). A path's count
/// outlives every entry (their life is capped below it): once it is gone,
/// no entry that recorded it remains.
pub(crate) static RESPONSE_INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('INCR', KEYS[1])
if string.find(KEYS[1], ':path-epoch:', 1, true) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"#,
    )
});
