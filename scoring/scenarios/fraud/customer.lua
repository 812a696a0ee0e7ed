-- Phase 2 of a fold: the customers of one hash-tag shard. A customer's state is its log of recent events, one
-- 32-byte record each, in arrival order; a fold appends a record (unless the event is in the log already) and
-- returns the log, and the feature service counts the windows and the sequence from it.
--
-- KEYS:  the log keys c2{<tag>}:<customer> of the distinct customers of this call (all in the call's slot), then,
--        on a single Redis only, the ring keys of their terminals.
-- ARGV:  ttl_s, horizon_us, packed events: per event '<II' (1-based index into KEYS of its log, of its
--        terminal's ring or 0), then its record: '<ddd' (event time us, amount, terminal risk at that time) and an
--        8-byte hash of its transaction id. With a ring index, the risk is computed here from the ring (the
--        14-day window of aggregates.py, read after terminal.lua folded the batch), so that both phases go in one
--        round trip; on a cluster the ring is in another slot and the feature service sends the risk.
--        ARGV[4]: the number of log keys; ARGV[5..8]: the buckets between an event's and its window's newest
--        (1: the one before), that window in buckets, the bucket's length in us, the ring's slots.
-- Reply: {per event '<dd' (records visible to it: its own record and those before it, folded now 1/0),
--         log of KEYS[1], ..., log of KEYS[#KEYS]}
local ttl = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local packed = ARGV[3]
local n_logs = tonumber(ARGV[4])
local REC, EV, DAY = 32, 40, 86400000000
local ENTRY = 16
local FIRST_LAG, RISK_BUCKETS = tonumber(ARGV[5]), tonumber(ARGV[6])
local BUCKET, SLOTS = tonumber(ARGV[7]), tonumber(ARGV[8])
local n = #packed / EV
local logs, dirty, out, rings = {}, {}, {}, {}
for i = 1, n do
  local off = (i - 1) * EV
  local k, r = struct.unpack('<II', packed, off + 1)
  local rec = string.sub(packed, off + 9, off + EV)
  if r > 0 then
    local ring = rings[r]
    if not ring then
      ring = redis.call('GET', KEYS[n_logs + r]) or ''
      rings[r] = ring
    end
    local bucket = math.floor(struct.unpack('<d', rec) / BUCKET)
    local labelled, frauds = 0, 0
    if #ring > 0 then
      for lag = FIRST_LAG, FIRST_LAG + RISK_BUCKETS - 1 do
        local stamp, _, l, f = struct.unpack('<iiii', ring, ((bucket - lag) % SLOTS) * ENTRY + 1)
        if stamp == bucket - lag then labelled, frauds = labelled + l, frauds + f end
      end
    end
    local risk = 0.0
    if labelled > 0 then risk = frauds / labelled end
    rec = string.sub(rec, 1, 16) .. struct.pack('<d', risk) .. string.sub(rec, 25)
  end
  local log = logs[k]
  if not log then
    log = redis.call('GET', KEYS[k]) or ''
    -- Drop the records that no window of this event or a later one can see (a customer's events arrive in time
    -- order), about once a day per customer: the scan stops at the first record inside the horizon.
    local cutoff = struct.unpack('<d', rec) - horizon
    if #log >= REC and struct.unpack('<d', log) <= cutoff - DAY then
      local p = 1
      while p <= #log and struct.unpack('<d', log, p) <= cutoff do p = p + REC end
      log = string.sub(log, p)
      dirty[k] = true
    end
  end
  -- A re-sent event (same id) is found by its hash at a record's hash offset, and not folded twice.
  local hash = string.sub(rec, 25, 32)
  local found, from = nil, 1
  while true do
    local p = string.find(log, hash, from, true)
    if not p then break end
    if (p - 1) % REC == 24 then found = p; break end
    from = p + 1
  end
  if found then
    out[i] = struct.pack('<dd', (found - 25) / REC + 1, 0)
  else
    log = log .. rec
    dirty[k] = true
    out[i] = struct.pack('<dd', #log / REC, 1)
  end
  logs[k] = log
end
local reply = {table.concat(out)}
for k = 1, n_logs do
  if dirty[k] then redis.call('SET', KEYS[k], logs[k], 'EX', ttl) end
  reply[k + 1] = logs[k]
end
return reply
