package redisbudget

import "github.com/redis/go-redis/v9"

// The fleet's state in Redis, under one hash tag so that a Redis Cluster
// keeps it on one node (Lua scripts need their keys together):
//
//	{name}:holders  sorted set: instance id -> expiry of its lease (ms, Redis clock)
//	{name}:counts   hash: instance id -> places the instance holds
//	{name}:queue    sorted set: waiting instance id -> when it started waiting (ms)
//	{name}:alive    sorted set: waiting instance id -> when it last asked (ms);
//	                one silent for a third of a lease leaves the queue
//	{name}:epoch    string: until when (ms) a store that has just started (or
//	                lost its data) refuses new places (two thirds of a lease),
//	                so that every live instance re-registers the places it
//	                holds first
//	{name}:need     pub/sub channel: "need <id>", an instance waits for a
//	                place; "free <id>", an instance gave one back to the
//	                fleet for an instance queued
//
// Every time is Redis's own (TIME), so the instances' clocks never matter
// to Redis's decisions.

// placeScript changes this instance's places by ARGV[2] (a delta: +1 to
// take a place, -1 to give one back, 0 to renew) and extends its lease. It
// first drops expired holders (their places return to the fleet) and stale
// queue entries. A positive delta is granted only when the fleet stays
// within ARGV[3] places, leaving room for the instances queued ahead of this
// one, and not while the store is recovering. When the instance is not
// registered (its lease expired, or Redis lost its data) it registers the
// places it says it holds (ARGV[5]) whatever the total: those connections
// exist, and refusing to count them would only hide them. ARGV[6] = 1 marks
// a caller that waits (it joins the queue when refused; granted, it
// goes to the back of the queue, so that queued instances take turns),
// ARGV[7] = 1 one whose waiters are all served once this place is granted
// (it then leaves the queue). ARGV[8] = 1 sets the
// instance's count to ARGV[5] whatever the total (a renewal: what the
// instance holds exists, and a count Redis refused to raise would hide it
// for good). ARGV[9] = 1 marks an instance back from its fallback share
// after Redis did not answer it: the others may still be on theirs, with
// places Redis does not count, so the store grants no new place for two
// thirds of a lease (as after a loss of data) while they register them;
// a return within a window already running does not extend it.
//
// It returns {granted (0/1), places the fleet holds, other instances
// queued, now, places counted for this instance}.
var placeScript = redis.NewScript(`
local holders, counts, queue, alive, epoch = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, delta, max, lease, mine = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local waiting, served = ARGV[6] == '1', ARGV[7] == '1'
local set, returning = ARGV[8] == '1', ARGV[9] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local ep = redis.call('GET', epoch)
if ep and returning and tonumber(ep) <= now then
	ep = now + math.floor(lease * 2 / 3)
	redis.call('SET', epoch, ep)
end
if not ep then
	-- A store without the fleet's state (new, or it lost its data): the
	-- instances that hold places register them at their next renewal,
	-- within a third of a lease, or stop trusting their lease at two
	-- thirds of it; until then no place is granted.
	ep = now + math.floor(lease * 2 / 3)
	redis.call('SET', epoch, ep)
end
local recovering = now < tonumber(ep)

for _, dead in ipairs(redis.call('ZRANGEBYSCORE', holders, '-inf', now)) do
	redis.call('ZREM', holders, dead)
	redis.call('HDEL', counts, dead)
end
-- A waiting instance asks at least every tenth of a lease; one that has
-- not asked for a third of a lease no longer waits (its callers gave up, or
-- it crashed) and leaves the queue, so that its turn holds no place back.
for _, gone in ipairs(redis.call('ZRANGEBYSCORE', alive, '-inf', now - math.floor(lease / 3))) do
	redis.call('ZREM', alive, gone)
	redis.call('ZREM', queue, gone)
end

local registered = redis.call('ZSCORE', holders, id)
local base = tonumber(redis.call('HGET', counts, id) or '0')
if not registered then
	base = mine
end
local total = 0
for _, v in ipairs(redis.call('HVALS', counts)) do
	total = total + tonumber(v)
end
local others = total
if registered then
	others = total - tonumber(redis.call('HGET', counts, id) or '0')
end

local granted = 1
local want = base + delta
if set then
	want = mine
end
if want < 0 then
	want = 0
end
if delta > 0 and not set then
	local ahead = redis.call('ZCARD', queue)
	local myTurn = redis.call('ZSCORE', queue, id)
	if myTurn then
		ahead = redis.call('ZCOUNT', queue, '-inf', '(' .. myTurn)
	end
	if recovering or others + want + ahead > max then
		granted = 0
		want = base
	end
end

redis.call('HSET', counts, id, want)
redis.call('ZADD', holders, now + lease, id)
if granted == 0 and waiting then
	redis.call('ZADD', queue, 'NX', now, id)
	redis.call('ZADD', alive, now, id)
elseif waiting then
	redis.call('ZADD', alive, now, id)
end
if granted == 1 and served then
	redis.call('ZREM', queue, id)
	redis.call('ZREM', alive, id)
elseif granted == 1 and waiting and delta > 0 then
	-- Served one place with more callers waiting: to the back of the
	-- queue, so that the instances queued behind take their turns.
	redis.call('ZADD', queue, 'XX', now, id)
end
local queued = redis.call('ZCARD', queue)
if redis.call('ZSCORE', queue, id) then
	queued = queued - 1
end
return {granted, others + want, queued, now, want}
`)

// leaveScript removes this instance from the fleet (Close): its places
// return at once.
var leaveScript = redis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
`)
