"""N retro workers sharing every rescan: a deterministic split of the history's partitions.

Member i of N reads the history partitions p with p % N == i, for every rescan. Each content_id
is on one partition (the history is keyed by it), so each content is matched by one member only,
and the per-content dedupe in Redis (workers/retro/announce.py) never races between members.

Why a fixed split and not a Kafka consumer group per rescan: a rescan is a bounded read of
given offsets, queued and merged in per-worker state; with a group, every rebalance (a member
joining, dying, a rolling update) moves partitions mid-rescan between workers whose queues and
merges differ, and on the embedded broker each join waits out max.poll.interval.ms. With a
fixed split each member is the single-worker design restricted to its partitions: its own state
(queue of segments, change-stream position), its own committed offsets (groups
vigil-retro.m<i>of<N>-...), its own pending announcements, so a SIGKILLed member resumes alone
from its offsets. The cost: a dead member's share waits for its restart (a StatefulSet restarts
it under the same ordinal), and the member count is fixed until `vigil retro members N`.

Guards, all refusing to start with a message (exit 2):
- more members than history partitions (a member would own nothing);
- an index outside [0, N) or a member count other than the one recorded in Redis
  (vigil:retro:members): members given different N would split the partitions differently,
  and some would be read twice, some never;
- two live processes with the same index (vigil:retro:alive:<i>, a lease renewed every 2 s).
"""
from __future__ import annotations

import json
import logging
import re
import socket
import time
from dataclasses import dataclass

import redis

from workers.settings import Settings

log = logging.getLogger("vigil.retro")
MEMBERS_KEY = "vigil:retro:members"  # {"members": N}: the count every member must have
ALIVE_KEY = "vigil:retro:alive:{index}"  # the lease of the process that is member <index>
LEASE_S = 10
ORIGIN_KEY = "vigil:retro:origin"  # the change-stream id the fleet's first member started at
STATE_KEY = "vigil:retro:state"  # a single worker's keys (N = 1), as before the split existed
PENDING_KEY = "vigil:retro:pending"  # also where `vigil retro run` records its pending announcements


class MembershipError(ValueError):
    """A configuration that would split the history wrongly; the worker refuses to start."""


@dataclass(frozen=True)
class Member:
    index: int
    members: int

    def owns(self, partition: int) -> bool:
        return partition % self.members == self.index

    def share(self, partitions: list[int]) -> list[int]:
        return [p for p in partitions if self.owns(p)]

    @property
    def state_key(self) -> str:
        return STATE_KEY if self.members == 1 else f"{STATE_KEY}:{self.index}"

    @property
    def pending_key(self) -> str:
        return PENDING_KEY if self.members == 1 else f"{PENDING_KEY}:{self.index}"

    @property
    def pending_keys(self) -> list[str]:
        """What this member resolves at start: its own, and member 0 also the CLI's."""
        return [self.pending_key] + ([PENDING_KEY] if self.index == 0 and self.members > 1 else [])

    @property
    def id_prefix(self) -> str:
        """Segment ids (and so consumer groups) never collide between members or member counts."""
        return "" if self.members == 1 else f"m{self.index}of{self.members}-"


def member_index(settings: Settings, hostname: str | None = None) -> int:
    """VIGIL_RETRO_MEMBER, else the trailing ordinal of the hostname (vigil-retro-2 -> 2)."""
    if settings.retro_members == 1:
        return 0
    if settings.retro_member >= 0:
        return settings.retro_member
    host = hostname or socket.gethostname()
    m = re.search(r"-(\d+)$", host)
    if not m:
        raise MembershipError(f"VIGIL_RETRO_MEMBERS={settings.retro_members} but this worker has no member index: "
                              f"set VIGIL_RETRO_MEMBER, or run it as a StatefulSet pod (hostname {host!r} "
                              "does not end in -<ordinal>)")
    return int(m.group(1))


def check_count(members: int, partitions: int) -> None:
    if members < 1:
        raise MembershipError(f"VIGIL_RETRO_MEMBERS={members}: at least 1")
    if members > partitions:
        raise MembershipError(f"VIGIL_RETRO_MEMBERS={members} but the history topic has {partitions} partitions: "
                              "a member would own none. Run at most that many retro workers, or create the "
                              "topic with more partitions (docs/retro.md, Scaling)")


def recorded(r: redis.Redis) -> int:
    raw = r.get(MEMBERS_KEY)
    return int(json.loads(raw)["members"]) if raw else 1


def join(r: redis.Redis, settings: Settings, partitions: int, name: str, wait_s: float = 2 * LEASE_S) -> Member:
    """Validate this worker's place in the fleet and take its index's lease (waiting up to
    wait_s for the lease of a SIGKILLed predecessor to expire)."""
    check_count(settings.retro_members, partitions)
    member = Member(member_index(settings), settings.retro_members)
    if not 0 <= member.index < member.members:
        raise MembershipError(f"retro member index {member.index} is outside 0..{member.members - 1} "
                              f"(VIGIL_RETRO_MEMBERS={member.members}); a StatefulSet's replicas and "
                              "VIGIL_RETRO_MEMBERS must be equal")
    # A fresh fleet records its count; a single worker's state from before is a fleet of one,
    # which only `vigil retro members N` may change (its state must be handed on).
    fresh = not r.exists(STATE_KEY)
    r.set(MEMBERS_KEY, json.dumps({"members": member.members if fresh else 1}), nx=True)
    have = recorded(r)
    if have != member.members:
        raise MembershipError(f"VIGIL_RETRO_MEMBERS={member.members} but the retro fleet is recorded with {have} "
                              f"members: stop every retro worker, run `vigil retro members {member.members}`, "
                              "then start them (docs/retro.md, Scaling)")
    key = ALIVE_KEY.format(index=member.index)
    deadline = time.monotonic() + wait_s
    while not r.set(key, name, nx=True, ex=LEASE_S):
        holder = r.get(key)
        if time.monotonic() > deadline:
            raise MembershipError(f"retro member {member.index} is held by a live worker ({holder}): two workers "
                                  "were given the same VIGIL_RETRO_MEMBER")
        log.info("waiting for the lease of a previous holder of this member index to expire",
                 extra={"member": member.index, "holder": holder})
        time.sleep(0.5)
    return member


def renew(r: redis.Redis, member: Member, name: str) -> None:
    """Keep the lease; a lease taken by another process means two workers share an index: stop."""
    key = ALIVE_KEY.format(index=member.index)
    holder = r.get(key)
    if holder not in (None, name):
        raise MembershipError(f"retro member {member.index}'s lease was taken by {holder}")
    r.set(key, name, ex=LEASE_S)


def leave(r: redis.Redis, member: Member, name: str) -> None:
    key = ALIVE_KEY.format(index=member.index)
    if r.get(key) == name:
        r.delete(key)


def reconfigure(r: redis.Redis, members: int, partitions: int) -> dict:
    """`vigil retro members N`: with every retro worker stopped and idle, hand the old members'
    change-stream position to N new ones. The new members start from the earliest old position,
    so no change is missed; a change one old member had passed is rescanned again on the
    partitions it now owns, which the Redis dedupe keeps from announcing anything twice."""
    check_count(members, partitions)
    old_n = recorded(r)
    old = [Member(i, old_n) for i in range(old_n)]
    alive = [m.index for m in old + [Member(i, members) for i in range(members)]
             if r.exists(ALIVE_KEY.format(index=m.index))]
    if alive:
        raise MembershipError(f"retro members {sorted(set(alive))} are running: stop every retro worker first")
    states = {m.index: json.loads(raw) for m in old if (raw := r.get(m.state_key))}
    busy = [i for i, st in states.items() if st.get("segments")]
    pending = [k for m in old for k in m.pending_keys if r.scard(k)]
    if busy or pending:
        raise MembershipError(f"retro members {busy} still have queued rescans and {pending} unresolved "
                              f"announcements: start the {old_n} old members until `vigil retro members` shows "
                              "them idle, then stop them and retry")
    new_states = []
    if states:
        positions = sorted(states.values(), key=lambda st: tuple(int(x) for x in st["stream_id"].split("-")))
        first = positions[0]
        seq = max(st.get("seq", 0) for st in states.values())
        for i in range(members):
            st = {"stream_id": first["stream_id"], "segments": [], "seq": seq}
            if "version" in first:
                st["version"] = first["version"]
            new_states.append(st)
    pipe = r.pipeline(transaction=True)
    for m in old:
        pipe.delete(m.state_key)
    for i, st in enumerate(new_states):
        pipe.set(Member(i, members).state_key, json.dumps(st))
    pipe.set(MEMBERS_KEY, json.dumps({"members": members}))
    pipe.execute()
    return {"members": members, "was": old_n, "partitions": partitions,
            "stream_id": new_states[0]["stream_id"] if new_states else None}


def status(r: redis.Redis) -> dict:
    """The recorded fleet: per member, whether it is alive and how many rescans it has queued."""
    n = recorded(r)
    out = []
    for i in range(n):
        m = Member(i, n)
        raw = r.get(m.state_key)
        st = json.loads(raw) if raw else {}
        out.append({"member": i, "alive": r.get(ALIVE_KEY.format(index=i)), "queued_rescans": len(st.get("segments", [])),
                    "stream_id": st.get("stream_id"), "pending": r.scard(m.pending_key)})
    return {"members": n, "fleet": out}
