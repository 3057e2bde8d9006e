"""The review store on SQLite and a real PostgreSQL: cases deduplicated with counts, replays
harmless, the queue's order, leases that never double-claim and expire, verdicts as one
transaction with the rules of who may take them."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select, update

from review_fixtures import postgres, review_db, review_settings, sessions  # noqa: F401
from workers.ops.logs import now_ms
from workers.review import auth, cases, queue, verdicts
from workers.review.db import Audit, Case, CaseInput, Verdict


def decision(event_id: str, content_id: str, kind: str = "review", source: str = "upload") -> dict:
    return {"schema_version": 1, "event_id": event_id, "content_id": content_id, "source": source,
            "decision": kind, "matches": [{"bank": "suspect", "entry_id": "f-1", "signal": "pdq", "distance": 12,
                                           "threshold": 31, "action": "review"}],
            "bank_version": 3, "latency_ms": {"total": 5}, "decided_at_ms": now_ms(), "worker": "m",
            "media_uri": f"file:///m/{content_id}.jpg"}


def report(report_id: str, content_id: str, sha: str) -> cases.Intake:
    return cases.Intake(f"report:{report_id}", content_id, "report", "report", "allow", f"file:///m/{content_id}",
                        "image", sha, [], now_ms(), reason="spam", reporter=f"user-{report_id}")


def test_review_decisions_become_one_case_per_content_with_a_count(sessions):
    first, created = cases.store(sessions, cases.from_decision(decision("e1", "c1"), 0.0))
    again, created2 = cases.store(sessions, cases.from_decision(decision("e2", "c1"), 0.0))
    replay, _ = cases.store(sessions, cases.from_decision(decision("e1", "c1"), 0.0))  # a replayed message
    assert created and not created2 and first == again == replay
    with sessions() as s:
        case = s.get(Case, first)
        assert case.count == 2 and case.priority_name == "near_miss" and case.media_uri == "file:///m/c1.jpg"
        assert case.evidence[0]["bank"] == "suspect"
        assert s.scalar(select(func.count()).select_from(CaseInput)) == 2


def test_reports_of_one_file_under_many_content_ids_are_one_case(sessions):
    ids = {cases.store(sessions, report(str(i), f"copy-{i % 7}", "ab" * 32))[0] for i in range(40)}
    assert len(ids) == 1
    with sessions() as s:
        case = s.get(Case, ids.pop())
        assert case.count == 40 and case.report_count == 40


def test_allows_and_unsampled_blocks_need_no_person_and_qa_sampling_is_stable():
    assert cases.from_decision({**decision("e", "c"), "decision": "allow"}, 1.0) is None
    assert cases.from_decision({**decision("e", "c"), "decision": "block"}, 0.0) is None
    assert cases.from_decision({**decision("e", "c"), "decision": "block"}, 1.0).kind == "qa"
    sampled = [cases.qa_sampled(f"e{i}", 0.1) for i in range(5000)]
    assert 400 < sum(sampled) < 600 and sampled == [cases.qa_sampled(f"e{i}", 0.1) for i in range(5000)]
    summary = {**decision("e", "c", source="live"), "summary": {"frames": 3}}
    assert cases.from_decision(summary, 1.0) is None


def test_queue_order_live_then_near_misses_then_qa_then_reports_by_count(sessions):
    cases.store(sessions, report("r1", "reported-once", "01" * 32))
    for i in range(3):
        cases.store(sessions, report(f"r2-{i}", "reported-thrice", "02" * 32))
    cases.store(sessions, cases.from_decision({**decision("q", "qa-item"), "decision": "block"}, 1.0))
    cases.store(sessions, cases.from_decision(decision("n", "near"), 0.0))
    cases.store(sessions, cases.from_decision(decision("l", "stream-1", source="live"), 0.0))
    with sessions() as s:
        order = [c.content_id for c in queue.listing(s, "reviewer")]
    assert order == ["stream-1", "near", "qa-item", "reported-thrice", "reported-once"]


def test_two_reviewers_never_hold_one_case_and_an_expired_lease_returns_it(sessions):
    case_id, _ = cases.store(sessions, cases.from_decision(decision("e1", "c1"), 0.0))
    wins: list[str] = []
    barrier = threading.Barrier(6)

    def race(name: str) -> None:
        barrier.wait()
        if queue.claim(sessions, case_id, name, "reviewer", 300):
            wins.append(name)
    threads = [threading.Thread(target=race, args=(f"r{i}",)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(wins) == 1
    other = "r0" if wins[0] != "r0" else "r1"
    assert not queue.claim(sessions, case_id, other, "reviewer", 300)
    assert queue.claim(sessions, case_id, wins[0], "reviewer", 300)  # the holder renews
    with sessions.begin() as s:  # the lease runs out
        s.execute(update(Case).where(Case.id == case_id).values(lease_until_ms=now_ms() - 1))
    assert queue.claim(sessions, case_id, other, "reviewer", 300)
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Audit).where(Audit.what == "claim")) == 3


def test_verdicts_need_the_lease_a_label_and_the_right_role(sessions, review_settings):
    case_id, _ = cases.store(sessions, cases.from_decision(decision("e1", "c1"), 0.0))
    with pytest.raises(verdicts.VerdictError, match="claim"):
        verdicts.record(sessions, review_settings, case_id, "ann", "reviewer", "confirm", "csam")
    assert queue.claim(sessions, case_id, "ann", "reviewer", 300)
    with pytest.raises(verdicts.VerdictError, match="label"):
        verdicts.record(sessions, review_settings, case_id, "ann", "reviewer", "confirm", None)
    verdicts.record(sessions, review_settings, case_id, "ann", "reviewer", "escalate")
    assert not queue.claim(sessions, case_id, "bob", "reviewer", 300)  # escalated: leads only
    assert queue.claim(sessions, case_id, "lee", "lead", 300)
    vid = verdicts.record(sessions, review_settings, case_id, "lee", "lead", "confirm", "terror")
    with pytest.raises(verdicts.VerdictError, match="already decided"):
        verdicts.record(sessions, review_settings, case_id, "lee", "lead", "overturn")
    with pytest.raises(verdicts.VerdictError, match="lead"):
        verdicts.record(sessions, review_settings, case_id, "ann", "reviewer", "reverse")
    rid = verdicts.record(sessions, review_settings, case_id, "lee", "lead", "reverse")
    with sessions() as s:
        v, r, case = s.get(Verdict, vid), s.get(Verdict, rid), s.get(Case, case_id)
        assert (v.action, v.bank, v.label, v.applied) == ("block", "reviewed-bad", "terror", False)
        assert (r.action, r.reverses, r.bank) == ("revoke", vid, "reviewed-bad")
        assert case.status == "open" and case.verdict is None  # back in the queue to be decided again
        assert v.event_id == f"case-{case_id}-verdict-{vid}"


def test_skip_returns_the_case_to_the_queue(sessions, review_settings):
    case_id, _ = cases.store(sessions, cases.from_decision(decision("e1", "c1"), 0.0))
    assert queue.claim(sessions, case_id, "ann", "reviewer", 300)
    verdicts.record(sessions, review_settings, case_id, "ann", "reviewer", "skip")
    assert queue.claim(sessions, case_id, "bob", "reviewer", 300)
    assert queue.next_unclaimed(sessions, "cat", "reviewer", 300) is None


def test_passwords_are_argon2_and_checked(sessions):
    auth.add_user(sessions, "ann", "reviewer", "correct horse")
    with sessions() as s:
        from workers.review.db import Reviewer
        assert s.get(Reviewer, "ann").password_hash.startswith("$argon2")
        assert auth.check_password(s, "ann", "correct horse") is not None
        assert auth.check_password(s, "ann", "wrong") is None
        assert auth.check_password(s, "nobody", "correct horse") is None
