-- Folds a batch of market ticks into per-symbol rings (the market scenario's state; scoring/scenarios/market/online.py).
-- KEYS: one ring per symbol of this shard. ARGV[1]: ring length (records), ARGV[2]: record size (bytes), ARGV[3]: state
-- TTL (s); then per tick, in arrival order: the 1-based index of its symbol's key, its sequence, its record (the raw
-- fields as little-endian doubles, the sequence the second of them).
-- Per tick: 0 folded, 1 folded after a gap (the ring restarts from it), 2 a duplicate (its sequence is in the ring), 3
-- stale (older than the last folded, not in the ring: not folded). Returns {statuses as a string of digits, the rings
-- as they were before the batch}: the caller rebuilds each tick's window from those, the way this script folded it.
local width, size, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local rings, before, changed = {}, {}, {}
for k = 1, #KEYS do
  local r = redis.call('GET', KEYS[k]) or ''
  rings[k] = r
  before[k] = r
end
local status = {}
for a = 4, #ARGV, 3 do
  local k, seq, rec = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), ARGV[a + 2]
  local ring = rings[k]
  local n = #ring / size
  local s = 0
  if n == 0 then
    ring = rec
  else
    local last = struct.unpack('<d', ring, (n - 1) * size + 9)
    if seq == last + 1 then
      ring = ring .. rec
      if n + 1 > width then ring = string.sub(ring, size + 1) end
    elseif seq > last + 1 then
      s = 1
      ring = rec
    else
      s = 3
      for j = 0, n - 1 do
        if struct.unpack('<d', ring, j * size + 9) == seq then s = 2 break end
      end
    end
  end
  if s < 2 then
    rings[k] = ring
    changed[k] = true
  end
  status[#status + 1] = tostring(s)
end
for k = 1, #KEYS do
  if changed[k] then redis.call('SET', KEYS[k], rings[k], 'EX', ttl) end
end
return {table.concat(status), before}
