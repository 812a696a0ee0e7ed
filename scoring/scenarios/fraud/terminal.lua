-- Phase 1 of a fold: the terminals of one hash-tag shard. Each terminal's state is a fixed-size ring of time
-- buckets (6 hours: scoring/features.py), so folding an event costs the same whatever the terminal's traffic. The window arithmetic is done by
-- the feature service (services/feature_service/aggregates.py), from the rings this returns.
--
-- KEYS:  the ring keys t2{<tag>}:<terminal> of the distinct terminals of this call (all in the call's slot).
-- ARGV:  ttl_s, tag ("{t3}"), ring slots, packed events (per event '<Ii': 1-based index into KEYS, bucket), then
--        one transaction id per event.
-- State (layout 2, redis_state.STATE_LAYOUT):
--        t2{tag}:<terminal>  string  slots entries '<iiii' (bucket, transactions, labelled, frauds among them),
--                                    entry = bucket mod slots
--        x2{tag}:<txid>      string  "<ring key>|<bucket>|<label: - none yet, 0, 1>": label routing, idempotency
-- Reply: {one byte per event ('1' folded now, '0' already folded), ring of KEYS[1], ..., ring of KEYS[#KEYS]}
-- (a terminal without state has the empty string as its ring).
local ttl = tonumber(ARGV[1])
local tag = ARGV[2]
local SLOTS = tonumber(ARGV[3])
local packed = ARGV[4]
local n = #packed / 8
local ENTRY = 16
local empty = string.rep(struct.pack('<iiii', -1, 0, 0, 0), SLOTS)
local rings, fresh = {}, {}
for i = 1, n do
  local k, bucket = struct.unpack('<Ii', packed, (i - 1) * 8 + 1)
  local route = KEYS[k] .. '|' .. bucket .. '|-'
  if redis.call('SET', 'x2' .. tag .. ':' .. ARGV[4 + i], route, 'NX', 'EX', ttl) then
    local ring = rings[k] or redis.call('GET', KEYS[k]) or empty
    local pos = (bucket % SLOTS) * ENTRY + 1
    local stamp, count, labelled, frauds = struct.unpack('<iiii', ring, pos)
    -- An entry holding an older bucket is reused; one holding a newer one (an event a whole ring late) is kept.
    if stamp <= bucket then
      if stamp < bucket then count, labelled, frauds = 0, 0, 0 end
      ring = string.sub(ring, 1, pos - 1) .. struct.pack('<iiii', bucket, count + 1, labelled, frauds)
        .. string.sub(ring, pos + ENTRY)
    end
    rings[k] = ring
    fresh[i] = '1'
  else
    fresh[i] = '0'
  end
end
local reply = {table.concat(fresh)}
for k = 1, #KEYS do
  if rings[k] then
    redis.call('SET', KEYS[k], rings[k], 'EX', ttl)
    reply[k + 1] = rings[k]
  else
    reply[k + 1] = redis.call('GET', KEYS[k]) or ''
  end
end
return reply
