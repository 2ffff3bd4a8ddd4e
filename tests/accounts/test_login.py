"""Log-ins cannot be guessed: delays, locks per username and address, the same answer for
unknown users, audited attempts, idle expiry and log-out ending the session on the server."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from observatory_core.accounts import sessions, throttle
from observatory_core.accounts.login import WRONG_LOGIN, log_in, log_out
from observatory_core.accounts.login_cookie import make_cookie, username_from_cookie
from observatory_core.accounts.users import add_user, set_disabled, set_password, set_role, unlock
from observatory_core.storage.schema import audit_log
from tests.helpers import END, make_org

PASSWORD = "correct-horse-battery"
KEY = "test-cookie-key-0123456789-abcdefghijklmnop"
IDLE = timedelta(minutes=60)


def _user(engine, name="dana", role="developer"):
    make_org(engine, "acme")
    add_user(engine, "acme", name, role, password=PASSWORD)


def _attempts(engine, username, passwords, address="10.0.0.1", start=END, step_s=60):
    """One attempt a minute (past every growing delay), so only locks can refuse."""
    return [
        log_in(engine, username, p, address, now=start + timedelta(seconds=i * step_s))
        for i, p in enumerate(passwords)
    ]


def test_locked_after_five_failures_and_unlocked_after_fifteen_minutes(engine):
    _user(engine)
    results = _attempts(engine, "dana", ["wrong-password-x"] * 5)
    assert [r.ok for r in results] == [False] * 5
    assert [r.message for r in results[:4]] == [WRONG_LOGIN] * 4
    assert "locked for this username after 5 failed attempts" in results[4].message
    assert "15 minutes" in results[4].message
    locked_at = END + timedelta(minutes=4)
    # the right password does not open a locked username
    during = log_in(engine, "dana", PASSWORD, "10.0.0.1", now=locked_at + timedelta(minutes=14))
    assert not during.ok and "try again in 1 minute" in during.message
    after = log_in(engine, "dana", PASSWORD, "10.0.0.1", now=locked_at + timedelta(minutes=15))
    assert after.ok and after.session_id


def test_delays_grow_between_failures(engine):
    _user(engine)
    now = END
    assert log_in(engine, "dana", "bad-password-1", now=now).message == WRONG_LOGIN
    soon = log_in(engine, "dana", PASSWORD, now=now + timedelta(milliseconds=500))
    assert not soon.ok and soon.message.endswith("wait 1 s and try again.")
    assert log_in(engine, "dana", "bad-password-2", now=now + timedelta(seconds=1)).message == (
        WRONG_LOGIN
    )  # a second failure: the next attempt waits 2 s
    early = log_in(engine, "dana", PASSWORD, now=now + timedelta(seconds=2))
    assert not early.ok and "wait 1 s" in early.message
    assert log_in(engine, "dana", PASSWORD, now=now + timedelta(seconds=3)).ok


def test_unknown_user_reads_exactly_like_a_wrong_password(engine):
    _user(engine)
    known = _attempts(engine, "dana", ["wrong-password-x"] * 5, address="10.0.0.1")
    unknown = _attempts(engine, "ghost", ["wrong-password-x"] * 5, address="10.0.0.2")
    assert [r.message.replace("ghost", "dana") for r in unknown] == [r.message for r in known]
    set_disabled(engine, "dana", True)
    unlock(engine, "dana")
    disabled = log_in(engine, "dana", PASSWORD, "10.0.0.3", now=END + timedelta(hours=1))
    assert not disabled.ok and disabled.message == WRONG_LOGIN


def test_one_address_trying_many_usernames_is_locked(engine):
    _user(engine)
    names = [f"user{i}" for i in range(20)]
    first = [
        log_in(engine, n, "guess-password", "10.9.9.9", now=END + timedelta(minutes=i))
        for i, n in enumerate(names[:3])
    ]
    assert all(r.message == WRONG_LOGIN for r in first)
    with engine.begin() as conn:  # 16 more failures from the same address, as log_in counts them
        for i in range(3, 19):
            throttle.fail(conn, throttle.ADDRESS, "10.9.9.9", END + timedelta(minutes=i))
    last = log_in(engine, names[19], "guess-password", "10.9.9.9", now=END + timedelta(minutes=19))
    assert "locked for your address after 20 failed attempts" in last.message
    refused = log_in(engine, "dana", PASSWORD, "10.9.9.9", now=END + timedelta(minutes=20))
    assert not refused.ok and "your address" in refused.message
    elsewhere = log_in(engine, "dana", PASSWORD, "10.0.0.7", now=END + timedelta(minutes=20))
    assert elsewhere.ok


def test_admin_unlocks_a_username(engine):
    _user(engine)
    _attempts(engine, "dana", ["wrong-password-x"] * 5)
    assert not log_in(engine, "dana", PASSWORD, now=END + timedelta(minutes=6)).ok
    assert unlock(engine, "dana")
    assert log_in(engine, "dana", PASSWORD, now=END + timedelta(minutes=6)).ok


def test_every_attempt_is_audited_with_the_address(engine):
    _user(engine)
    log_in(engine, "dana", "wrong-password-x", "10.1.1.1", now=END)
    log_in(engine, "ghost", "wrong-password-x", "10.1.1.2", now=END)
    ok = log_in(engine, "dana", PASSWORD, "10.1.1.1", now=END + timedelta(minutes=1))
    log_out(engine, ok.session_id, "10.1.1.1", now=END + timedelta(minutes=2))
    a = audit_log.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(a.org_id, a.username, a.action, a.address, a.detail)
            .where(a.action.like("log%"))
            .order_by(a.id)
        ).all()
    acme = rows[0].org_id
    assert [(r.org_id, r.username, r.action, r.address) for r in rows] == [
        (acme, "dana", "login.failed", "10.1.1.1"),
        (None, "ghost", "login.failed", "10.1.1.2"),
        (acme, "dana", "login", "10.1.1.1"),
        (acme, "dana", "logout", "10.1.1.1"),
    ]
    assert rows[0].detail == {"reason": "wrong password"}


def test_sessions_expire_after_the_idle_time(engine):
    _user(engine)
    sid = log_in(engine, "dana", PASSWORD, now=END).session_id
    assert sessions.resume(engine, sid, IDLE, now=END + timedelta(minutes=59)).username == "dana"
    # active at minute 59: the idle clock starts over from there
    assert sessions.resume(engine, sid, IDLE, now=END + timedelta(minutes=118)).username == "dana"
    gone = sessions.resume(engine, sid, IDLE, now=END + timedelta(minutes=179))
    assert gone == sessions.Resumed(reason="idle")
    assert sessions.resume(engine, sid, IDLE, now=END + timedelta(minutes=180)).reason == "idle"


def test_logout_ends_the_session_so_the_cookie_is_worthless(engine):
    _user(engine)
    sid = log_in(engine, "dana", PASSWORD).session_id
    cookie = make_cookie("dana", sid, KEY, END + timedelta(days=3650))
    assert username_from_cookie(cookie, KEY, engine, IDLE) == "dana"
    log_out(engine, sid)
    assert username_from_cookie(cookie, KEY, engine, IDLE) is None
    assert sessions.resume(engine, sid, IDLE).reason == "logout"
    # a forged cookie naming someone else's session is refused too
    other = log_in(engine, "dana", PASSWORD).session_id
    add_user(engine, "acme", "sam", "admin", password=PASSWORD)
    assert (
        username_from_cookie(
            make_cookie("sam", other, KEY, END + timedelta(days=3650)), KEY, engine, IDLE
        )
        is None
    )


def test_disabling_or_a_new_password_ends_sessions_a_new_role_applies_at_once(engine):
    from observatory_core.accounts.permissions import Role
    from observatory_core.accounts.users import scope_for

    _user(engine, role="admin")
    first = log_in(engine, "dana", PASSWORD).session_id
    set_role(engine, "dana", "viewer")
    assert sessions.resume(engine, first, IDLE).username == "dana"
    assert scope_for(engine, "dana").role is Role.VIEWER
    set_password(engine, "dana", "another-password-1")
    assert sessions.resume(engine, first, IDLE).reason == "password"
    second = log_in(engine, "dana", "another-password-1").session_id
    set_disabled(engine, "dana", True)
    assert sessions.resume(engine, second, IDLE).reason == "disabled"


def test_throttle_counts_hold_across_connections(engine):
    """Two processes share the counts: each failure is one atomic update of the row."""
    with engine.begin() as conn:
        for i in range(3):
            throttle.fail(conn, throttle.USER, "dana", END + timedelta(seconds=i))
    with engine.connect() as conn:
        block = throttle.blocked(conn, throttle.USER, "dana", END + timedelta(seconds=3))
    assert block is not None and not block.locked
    assert block.until == END + timedelta(seconds=2 + 4)  # third failure: wait 2^2 s


def test_attempts_racing_past_the_check_still_get_five_password_checks(engine, monkeypatch):
    """Parallel attempts (several sessions or processes) all pass the lock check before any
    has failed; each is counted before its password is checked, so the sixth is refused."""
    _user(engine)
    monkeypatch.setattr(throttle, "blocked", lambda *a: None)  # every check ran before the counts
    with engine.begin() as conn:  # five attempts in flight, counted, passwords not yet checked
        for _ in range(5):
            throttle.count(conn, throttle.USER, "dana", END)
    racing = log_in(engine, "dana", PASSWORD, now=END)
    assert not racing.ok and "locked for this username" in racing.message


def test_maintenance_forgets_old_streaks_and_sessions(engine, tmp_path):
    from observatory_core.exports.housekeeping import maintenance
    from observatory_core.exports.worker import WorkerConfig
    from observatory_core.storage.schema import auth_throttle, user_sessions

    _user(engine)
    old = log_in(engine, "dana", PASSWORD, now=END).session_id
    log_out(engine, old, now=END)
    log_in(engine, "dana", PASSWORD, now=END + timedelta(days=40))
    log_in(engine, "ghost", "guess-password", "10.2.2.2", now=END + timedelta(days=40))
    with engine.begin() as conn:
        throttle.fail(conn, throttle.USER, "stale", END)
    maintenance(engine, WorkerConfig(export_dir=tmp_path), now=END + timedelta(days=40, minutes=1))
    with engine.connect() as conn:
        subjects = set(conn.execute(select(auth_throttle.c.subject)).scalars())
        left = conn.execute(select(user_sessions.c.created_at)).scalars().all()
    assert subjects == {"ghost", "10.2.2.2"}
    assert left == [END + timedelta(days=40)]
