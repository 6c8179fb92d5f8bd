"""Ctrl-C deferred to safe points (SSIMQualityLib.interrupts)."""
import os
import signal
import threading

import pytest

from SSIMQualityLib.interrupts import deferred_interrupt


def _sigint():
    os.kill(os.getpid(), signal.SIGINT)


def test_first_sigint_waits_for_check_and_handler_is_restored():
    before = signal.getsignal(signal.SIGINT)
    reached = False
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupt() as stop:
            stop.check()  # nothing pending: no effect
            _sigint()
            reached = True  # the signal did not interrupt the work here
            assert stop.requested
            stop.check(5)  # also usable as a progress callback
    assert reached
    assert signal.getsignal(signal.SIGINT) is before


def test_second_sigint_raises_at_once():
    with deferred_interrupt() as stop:
        _sigint()
        with pytest.raises(KeyboardInterrupt):
            _sigint()
        assert stop.requested


def test_outside_the_main_thread_nothing_changes():
    seen = {}

    def work():
        with deferred_interrupt() as stop:
            seen["handler"] = signal.getsignal(signal.SIGINT)
            stop.check()
            seen["requested"] = stop.requested

    before = signal.getsignal(signal.SIGINT)
    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == {"handler": before, "requested": False}


def test_ignored_sigint_stays_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred_interrupt() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            _sigint()  # ignored, as nohup asked
            stop.check()
            assert not stop.requested
    finally:
        signal.signal(signal.SIGINT, before)


def _sigint_disposition():
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_reader_processes_leave_ctrl_c_to_the_parent():
    """A terminal's Ctrl-C reaches every process of the job: the score command's reader processes must not die
    of it (a broken pool) while the parent finishes its batch and saves."""
    from SSIMQualityLib.batch import _reader_pool

    with _reader_pool(1, True) as pool:
        assert pool.submit(_sigint_disposition).result(timeout=120) is True
    assert not _sigint_disposition()  # the parent's own handling untouched


def test_sigterm_is_deferred_like_ctrl_c_unless_someone_handles_it():
    """A scheduler's SIGTERM (time limit, scancel) stops at the next check, as Ctrl-C does; a SIGTERM handler set
    by someone else (an embedding application) is left in place."""
    from SSIMQualityLib.interrupts import Terminated

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        with deferred_interrupt() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.requested
            stop.check()
    assert signal.getsignal(signal.SIGTERM) is before

    def theirs(signum, frame):
        theirs.called = True

    theirs.called = False
    signal.signal(signal.SIGTERM, theirs)
    try:
        with deferred_interrupt() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            stop.check()  # not ours to defer: nothing raised
        assert theirs.called and not stop.requested
    finally:
        signal.signal(signal.SIGTERM, before)


def test_sigterm_stops_any_command_with_its_line_and_a_ctrl_c_while_starting_too(tmp_path, capsys, monkeypatch,
                                                                                sample_path):
    """`corrupt` under a scheduler's SIGTERM died without a word (Python's default), and then said "finished
    results were kept" on Ctrl-C with nothing written; a Ctrl-C while torch loaded printed a page of traceback."""
    import SSIMQualityLib.cli as cli
    from SSIMQualityLib.interrupts import Terminated, terminate_as_interrupt

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(Terminated):
        with terminate_as_interrupt():
            with deferred_interrupt() as stop:  # score's loop: deferred to its check, as Ctrl-C is
                os.kill(os.getpid(), signal.SIGTERM)
                assert stop.requested
                stop.check()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored

    def stopped(args):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not stopped")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser.commands["corrupt"].set_defaults(func=stopped)
    code = cli.main(["corrupt", str(sample_path), str(tmp_path / "out.nii.gz")])
    err = capsys.readouterr().err
    assert code == 143 and err.strip() == ("ssimquality: terminated (SIGTERM); nothing of this run was written (its "
                                           "outputs are written whole, at the end)")

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["score", "x.nii.gz"]) == 130
    assert capsys.readouterr().err == "ssimquality: interrupted while starting; nothing was done\n"
