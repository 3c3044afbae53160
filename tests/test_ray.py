"""compare --executor ray on real Ray clusters on this machine: a local instance (in this process,
and started by the command itself), and a head started with `ray start --head`, joined by address
with token authentication. Same numbers as the local executor, events as they happen, Ctrl-C, a
killed worker, resume, and no Ray process left behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers import assert_clean_error, invoke, read_json
from fmnist_cli import compare as cmp
from fmnist_cli.config import RunConfig
from fmnist_cli.records import EpochEnd, Status
from fmnist_cli.store import RunStore

# JAX: a worker loads it in half TensorFlow's time, and the tests start a dozen workers
TINY = ("--limit", "500", "--hidden", "32", "--backend", "jax")


# --- without a cluster --------------------------------------------------------------------------

def test_without_ray_installed_it_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert_clean_error(invoke("compare", "sgd", "adam", "--executor", "ray"), 2, "pip install 'fmnist-cli[ray]'")


@pytest.mark.parametrize("args, text", [
    (["--address", "127.0.0.1:6379"], "--address applies to --executor ray"),
    (["--gpus-per-unit", "1"], "--gpus-per-unit applies to --executor ray"),
    (["--executor", "dask"], "Unknown executor 'dask'"),
    (["--executor", "ray", "--cpus-per-unit", "0"], "--cpus-per-unit must be above 0"),
])
def test_executor_options_are_checked_before_anything_runs(args, text, runs_dir):
    pytest.importorskip("ray")
    assert_clean_error(invoke("compare", "sgd", "adam", *args), 2, text)
    assert not runs_dir.exists()


def test_an_address_where_nothing_answers_fails_in_a_second(runs_dir):
    pytest.importorskip("ray")
    started = time.monotonic()
    result = invoke("compare", "sgd", "--executor", "ray", "--address", f"127.0.0.1:{free_port()}", "--quiet")
    assert_clean_error(result, 2, "Cannot reach the Ray cluster at 127.0.0.1:", "ray start --head", max_sentences=1)
    assert time.monotonic() - started < 10 and not (runs_dir / "comparisons").exists()


@pytest.mark.parametrize("reply", [None, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"])
def test_an_address_that_answers_but_not_as_ray_fails_in_seconds(reply, runs_dir):
    """A silent listener, or a web server: ray.init would retry either for minutes."""
    import threading

    pytest.importorskip("ray")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    held = []

    def serve():
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            held.append(conn)
            if reply:
                conn.recv(1024)
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    try:
        started = time.monotonic()
        result = invoke("compare", "sgd", "--executor", "ray", "--address", f"127.0.0.1:{port}", "--quiet")
        assert_clean_error(result, 2, f"Something answers at 127.0.0.1:{port}, but not as a Ray cluster",
                           "no answer in" if reply is None else "does not speak gRPC", max_sentences=1)
        assert time.monotonic() - started < 10 and not (runs_dir / "comparisons").exists()
    finally:
        for conn in held:
            conn.close()
        server.close()


@pytest.mark.parametrize("address, env, text", [
    ("nonsense::", False, "Cannot read the Ray address 'nonsense::' from --address: give the head node's HOST:PORT"),
    ("head-node:99999", False, "Cannot read the Ray address 'head-node:99999' from --address"),
    ("nonsense::", True, "Cannot read the Ray address 'nonsense::' from $RAY_ADDRESS"),
    ("127.0.0.1:{port}", False, "Cannot reach the Ray cluster at 127.0.0.1:"),
    ("127.0.0.1:{port}", True, "check $RAY_ADDRESS"),
])
def test_an_address_unreadable_or_unreachable_is_bad_input_alike(address, env, text, runs_dir, monkeypatch):
    """Either way the address is wrong, and the user fixes it: exit 2 (as for any bad option value) and
    one sentence naming where it came from; it was 2 for one and 1 for the other."""
    pytest.importorskip("ray")
    address = address.format(port=free_port())
    if env:
        monkeypatch.setenv("RAY_ADDRESS", address)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = invoke("compare", "sgd", "--executor", "ray", *([] if env else ["--address", address]), "--quiet")
    assert_clean_error(result, 2, text, max_sentences=1)
    assert not (runs_dir / "comparisons").exists()


def test_a_failed_join_says_what_failed_without_ray_s_traceback():
    pytest.importorskip("ray")
    from fmnist_cli.ray_executor import RayExecutor

    err = RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                       "  File \"x.py\", line 1, in <module>\nConnectionError: nothing")
    message = str(RayExecutor(address="10.0.0.9:6379")._connect_error(err))
    assert "(Failed to connect to GCS)" in message and "Traceback" not in message, message


def test_show_refuses_executor_options():
    assert_clean_error(invoke("compare", "--show", "latest", "--executor", "ray"), 2, "--executor")


def test_a_run_sent_back_arrives_whole(runs_dir, tmp_path, fake_engine):
    from fmnist_cli import training
    from fmnist_cli.errors import StorageError

    result = training.train(RunConfig(epochs=2).validate(), tmp_path / "worker")
    packed = RunStore.pack_run(Path(result.run_dir))
    assert {"config.json", "run.json", "history.json", "model.keras"} <= set(packed) and ".lock" not in packed
    store = RunStore(runs_dir)
    run_dir = store.receive_run(result.run_id, packed)
    assert run_dir == runs_dir / result.run_id
    info = store.load_run(run_dir)
    assert info.status == Status.COMPLETED and info.history == result.history
    assert sorted(p.name for p in runs_dir.iterdir()) == [result.run_id]   # no staging folder left
    with pytest.raises(StorageError):   # a run is never overwritten
        store.receive_run(result.run_id, packed)
    with pytest.raises(StorageError):
        store.receive_run("../evil", packed)
    with pytest.raises(StorageError):
        store.receive_run(result.run_id + "x", {**packed, "run.sh": b"rm -rf ~"})


# --- a real local cluster -------------------------------------------------------------------------

def ray_processes(tmp: str) -> list[int]:
    """This machine's processes that belong to the Ray instances started with RAY_TMPDIR=tmp (each
    inherits it), zombies left out: they have exited."""
    needle = f"RAY_TMPDIR={tmp}\0".encode()
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (proc / "environ").read_bytes() and int(proc.name) != os.getpid():
                if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(proc.name))
        except (OSError, IndexError):
            continue
    return found


def wait_gone(tmp: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while ray_processes(tmp) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ray_processes(tmp), f"Ray processes left behind: {ray_processes(tmp)}"


@pytest.fixture(scope="module")
def ray_tmp():
    """Ray's temporary folder, short (Ray's socket paths must stay under 108 bytes, which pytest's
    folders can pass), removed afterwards; set for this module, and never /tmp/ray."""
    tmp = tempfile.mkdtemp(prefix="fmnist-ray-")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", tmp)
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        yield tmp
    wait_gone(tmp)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def session(ray_tmp):
    """A local Ray instance in this process, started as the executor starts one (with this machine's
    cores, 2 here); executors in this process use it and leave it running."""
    pytest.importorskip("ray")
    from fmnist_cli.ray_executor import RayExecutor

    owner = RayExecutor()
    owner.connect()
    yield owner
    owner.close()


def new_record(store: RunStore, *optimizers, vary=(), repeats=1, **settings):
    base = RunConfig(limit=500, hidden=(32,), backend="jax", **settings).validate()
    variants = cmp.expand(base, list(optimizers), cmp.parse_vary(list(vary)))
    return cmp.new_comparison(store, base, variants, repeats, ["test"])


def metrics(history: dict) -> dict:
    return {k: v for k, v in history.items() if k != "seconds"}   # the numbers, not the timings


def histories(store: RunStore, record) -> dict:
    return {(v.label, r): metrics(store.read_history(store.root / run_id))
            for v in record.variants for r, run_id in enumerate(v.runs)}


@pytest.mark.ray
def test_same_numbers_as_the_local_executor_with_runs_sent_back(session, runs_dir, tmp_path):
    """Workers that do not share the runs folder: each run comes back whole, and the numbers are the
    local executor's, epoch events included, as they happened."""
    from fmnist_cli.ray_executor import RayExecutor

    local = run("compare", "sgd", "adam", "--vary", "batch_size=32,64", *TINY, "--epochs", "2", "--json",
                env={"FMNIST_RUNS_DIR": str(tmp_path / "local")})   # JAX: not in this TensorFlow process
    assert local.returncode == 0, local.stderr
    store = RunStore(runs_dir)
    events = []
    record = cmp.execute(store, new_record(store, "sgd", "adam", vary=["batch_size=32,64"], epochs=2),
                         on_event=events.append, executor=RayExecutor(shared=False))
    assert not record.errors
    assert histories(store, record) == {(v["label"], 0): metrics(v["runs"][0]["history"])
                                        for v in json.loads(local.stdout)["variants"]}
    ends = [(e.run_id, e.epoch) for e in events if isinstance(e, EpochEnd)]
    run_ids = [run_id for v in record.variants for run_id in v.runs]
    assert sorted(ends) == sorted((run_id, epoch) for run_id in run_ids for epoch in (1, 2))
    for run_id in run_ids:
        info = store.load_run(runs_dir / run_id)
        assert info.status == Status.COMPLETED and info.model_path and info.record.pid != os.getpid()
    assert store.load_model(runs_dir / run_ids[0]).count_params() == 784 * 32 + 32 + 32 * 10 + 10
    assert not [p.name for p in runs_dir.iterdir() if p.name.startswith(".")]   # no marker, no staging


@pytest.mark.ray
def test_a_unit_no_node_can_hold_is_refused_before_anything_is_made(session, runs_dir):
    result = invoke("compare", "sgd", *TINY, "--executor", "ray", "--gpus-per-unit", "1", "--quiet")
    assert_clean_error(result, 2, "has 1 CPU(s) and 1 GPU(s)", "0 GPU(s)", "--gpus-per-unit")
    assert not (runs_dir / "comparisons").exists()


@pytest.mark.ray
def test_a_stop_keeps_finished_epochs_and_starts_no_queued_unit(session, runs_dir):
    """Three units on two workers; a first Ctrl-C once both have begun: the two running units stop at
    their next check and keep what finished, the queued one never starts."""
    from fmnist_cli.ray_executor import RayExecutor
    from fmnist_cli.training import StopFlag

    store = RunStore(runs_dir)
    record = new_record(store, "sgd", vary=["batch_size=32,64,128"], epochs=300)
    stop = StopFlag()
    training = set()

    def on_event(event):
        if isinstance(event, EpochEnd):
            training.add(event.run_id)
            if len(training) == 2:   # both running units have begun
                stop.event.set()

    record = cmp.execute(store, record, on_event=on_event, should_stop=stop, executor=RayExecutor(max_workers=2))
    runs = [v.runs[0] for v in record.variants]
    assert runs[2] is None and len(list(store.list_runs())) == 2, runs   # the queued unit never started
    for run_id in runs[:2]:
        info = store.load_run(runs_dir / run_id)
        assert info.status == Status.INTERRUPTED and 1 <= info.record.epochs_run < 300
        assert info.record.model_epoch == info.record.epochs_run and info.model_path


@pytest.mark.ray
def test_runs_sent_back_go_on_from_their_checkpoints(session, runs_dir):
    """Workers without the runs folder: a stopped comparison's runs come back interrupted with their
    checkpoints; `--resume` ships them to the workers, and they come back under the same ids with the
    numbers of an unbroken comparison."""
    from fmnist_cli.ray_executor import RayExecutor
    from fmnist_cli.training import StopFlag

    store = RunStore(runs_dir)
    unbroken = cmp.execute(store, new_record(store, "sgd", "adam", epochs=40), executor=RayExecutor(shared=False))
    record = new_record(store, "sgd", "adam", epochs=40)
    stop = StopFlag()

    def on_event(event):
        if isinstance(event, EpochEnd) and event.epoch >= 2:
            stop.event.set()

    record = cmp.execute(store, record, on_event=on_event, should_stop=stop, executor=RayExecutor(shared=False))
    ids = [v.runs[0] for v in record.variants]
    for run_id in ids:
        info = store.load_run(runs_dir / run_id)
        assert info.status == Status.INTERRUPTED and 2 <= info.record.model_epoch < 40, info
    events = []
    record = cmp.execute(store, store.read_comparison(record.id), on_event=events.append,
                         executor=RayExecutor(shared=False))
    assert not record.errors and [v.runs[0] for v in record.variants] == ids
    assert [e.resumed for e in events if type(e).__name__ == "Plan"] == [2]
    assert histories(store, record) == histories(store, unbroken)
    for run_id in ids:
        info = store.load_run(runs_dir / run_id)
        assert info.status == Status.COMPLETED and info.record.epochs_run == 40 and info.model_path
    assert not [p.name for p in runs_dir.iterdir() if p.name.startswith(".")]   # no marker, no staging


@pytest.mark.ray
def test_a_killed_worker_fails_its_runs_and_resume_retrains_them(session, runs_dir):
    """`kill -9` of the worker training one unit: its runs are failed with the reason (never left
    running), the other unit finishes, the comparison exits 1; resume trains the lost runs again."""
    store = RunStore(runs_dir)
    record = new_record(store, "sgd", "adam", vary=["batch_size=32,64"], epochs=100)
    killed = []

    def on_event(event):
        if isinstance(event, EpochEnd) and not killed and event.variant.endswith("batch=32"):
            pid = read_json(runs_dir / event.run_id / "run.json")["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    from fmnist_cli.ray_executor import RayExecutor

    record = cmp.execute(store, record, on_event=on_event, executor=RayExecutor())
    assert killed
    summary = cmp.summarize(store, record)
    by_label = {v.label: v for v in summary.variants}
    for label in ("sgd batch=64", "adam batch=64"):
        assert by_label[label].status == Status.COMPLETED
    for label in ("sgd batch=32", "adam batch=32"):
        slot = by_label[label].runs[0]
        assert slot.status == Status.FAILED and slot.message.startswith("Lost its Ray worker (process"), slot
    lost = [info for info in store.list_runs() if info.record and info.record.pid == killed[0]]
    assert len(lost) == 2 and all(info.status == Status.FAILED for info in lost), lost
    assert all(info.record.message.startswith("Lost its Ray worker") for info in lost)

    # the command line, in this process (on its Ray session): the driver loads no Keras, the workers JAX
    resumed = invoke("compare", "--resume", record.id, "--executor", "ray", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert {v["status"] for v in json.loads(resumed.stdout)["variants"]} == {"completed"}


# --- the command line, its own local instance, a head joined by address -----------------------------

def environment(**extra) -> dict:
    """This test process's environment without the Ray settings of its own session (its address, its
    token), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
    return {**env, **extra}


def own_tmp(ray_tmp: str, name: str) -> str:
    """A Ray temporary folder for one test's instance, so that its processes are told from others'."""
    path = os.path.join(ray_tmp, name)
    os.mkdir(path)
    return path


class Command:
    """A real `fmnist` in its own session (as from a terminal), its output read as it comes."""

    def __init__(self, *args, env):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "fmnist_cli", *map(str, args)], stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True, env=environment(**env),
                                     start_new_session=True)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_for(self, *texts: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not all(text in self.output() for text in texts):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.output()
            time.sleep(0.1)

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)   # the whole foreground group, as a terminal sends it

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout=timeout)


@pytest.mark.ray
def test_ctrl_c_on_the_command_line_and_its_local_instance_goes_with_it(ray_tmp, runs_dir):
    tmp = own_tmp(ray_tmp, "ctrl-c")
    p = Command("compare", "sgd", "adam", "--vary", "batch_size=32,64,128", *TINY, "--epochs", "200",
                "--executor", "ray", "--jobs", "2", env={"RAY_TMPDIR": tmp})
    try:
        p.wait_for("batch=32 #0] epoch 2/200", "batch=64 #0] epoch 2/200")
        p.ctrl_c()
        assert p.wait() == 130, p.output()
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
    out = p.output()
    assert "--resume" in out and "Traceback" not in out, out
    (record_path,) = (runs_dir / "comparisons").glob("*.json")
    record = read_json(record_path)
    statuses = {read_json(runs_dir / run_id / "run.json")["status"]
                for v in record["variants"] for run_id in v["runs"] if run_id}
    assert statuses == {"interrupted"}, statuses
    assert [run for v in record["variants"] for run in v["runs"]].count(None) == 2   # the queued unit
    wait_gone(tmp)


@pytest.mark.ray
def test_a_second_ctrl_c_gives_up_at_once_and_leaves_no_run_running(ray_tmp, runs_dir):
    tmp = own_tmp(ray_tmp, "twice")
    p = Command("compare", "sgd", "--vary", "batch_size=32,64", "--limit", "500", "--hidden", "2000,2000",
                "--backend", "jax", "--epochs", "20", "--executor", "ray", env={"RAY_TMPDIR": tmp})
    try:
        p.wait_for("epoch 1/20")
        p.ctrl_c()
        time.sleep(0.3)
        sent = time.monotonic()
        p.ctrl_c()
        assert p.wait() == 130, p.output()
        waited = time.monotonic() - sent
    finally:
        if p.proc.poll() is None:
            p.proc.kill()
    assert waited < 5, (waited, p.output())
    # given up, not finished: saving a 2000-2000 model takes the workers seconds, so no table came
    assert "Traceback" not in p.output() and "Finish it with" not in p.output(), p.output()
    runs = [d for d in runs_dir.iterdir() if d.is_dir() and d.name != "comparisons"]
    assert runs and {read_json(d / "run.json")["status"] for d in runs} <= {"interrupted", "completed"}
    wait_gone(tmp)


def run(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fmnist_cli", *map(str, args)], capture_output=True, text=True,
                          env=environment(**env), timeout=180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ray
def test_a_head_joined_by_address_with_its_token(ray_tmp, runs_dir, tmp_path):
    """`ray start --head` (token authentication on), joined with --address; without the token, one
    sentence saying what is missing."""
    token = tmp_path / "token"
    token.write_text("fmnist-test-" + os.urandom(16).hex())
    tmp = own_tmp(ray_tmp, "head")
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    port = free_port()
    ports = [f"--{name}={free_port()}" for name in (
        "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port")]
    log = tmp_path / "head.log"
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
                             f"--port={port}", "--num-cpus=2", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", "--disable-usage-stats", *ports],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=environment(RAY_TMPDIR=tmp, **auth),
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        args = ("compare", "sgd", "adam", *TINY, "--epochs", "2", "--json")
        joined = run(*args, "--executor", "ray", "--address", f"127.0.0.1:{port}", env=auth)
        assert joined.returncode == 0, joined.stderr
        out = json.loads(joined.stdout)
        noise = [line for line in joined.stderr.splitlines()   # Ray's own notes, its C++ core's logs
                 if line.startswith("[20") or "WARN" in line or "token" in line.lower()]
        assert out["status"] == "completed" and not noise, joined.stderr
        for v in out["variants"]:
            assert read_json(runs_dir / v["runs"][0]["run_id"] / "run.json")["status"] == "completed"

        refused = run(*args, "--executor", "ray", "--quiet", env={"RAY_ADDRESS": f"127.0.0.1:{port}",
                                                       "RAY_gcs_server_port_wait_time_s": "2"})   # Ray retries 20 s
        assert_clean_error(refused, 1, "token", "$RAY_AUTH_TOKEN")
    finally:
        head.send_signal(signal.SIGTERM)   # `ray start --block` stops what it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
    wait_gone(tmp)
