"""The job file: the shipped examples, every key, and errors that name the key path and line."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import subprocess
import textwrap
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from poold.jobspec import JobFileError, JobSpec, key_lines, parse_job_file, parse_job_text
from poold.shipped import shipped_path

EXAMPLES_DIR = shipped_path("config", "examples")
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.toml"))

# Where each example lands is checked on the real engine in tests/test_examples.py.


def job(body: str) -> str:
    """A job file with a valid name and command on lines 1-2; ``body`` starts on line 3."""
    return 'name = "a"\ncommand = ["true"]\n' + textwrap.dedent(body).lstrip("\n")


def problems_of(text: str) -> list[str]:
    with pytest.raises(JobFileError) as caught:
        parse_job_text(text)
    return caught.value.problems


# --- the shipped examples ---------------------------------------------------------------


def test_there_are_six_to_ten_examples():
    assert 6 <= len(EXAMPLES) <= 10, [path.name for path in EXAMPLES]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_parses_and_says_where_it_lands(path):
    spec = parse_job_file(path)
    header = path.read_text().split("\nname", 1)[0]
    assert header.startswith("#") and "Where it lands in the demo pool" in header
    assert spec.max_runtime is not None


def test_examples_cover_what_the_demo_needs():
    specs = {path.name: parse_job_file(path) for path in EXAMPLES}
    finetune = specs["llm-finetune.toml"].resources
    assert (finetune.count, finetune.interconnect, finetune.memory_per_device) == (4, "nvlink", 40960)
    assert [(entry.model, entry.speed) for entry in finetune.accept] == [("H100", 2.5), ("A100", 1.0)]
    assert specs["inference-l4.toml"].resources.memory_per_device == 16384
    assert specs["notebook-mig.toml"].resources.mig_profile == "1g.10gb"
    assert specs["half-gpu.toml"].resources.share == 0.5
    assert (specs["ascend-npu.toml"].resources.kind, specs["ascend-npu.toml"].resources.count) == ("npu", 2)
    assert specs["fpga-u250.toml"].resources.fpga_shell == "xilinx_u250_gen3x16_xdma_shell_4_1"
    assert specs["any-family.toml"].resources.kind == "any"
    assert specs["eval-fastest.toml"].resources.objective == "time"
    assert specs["cpu-preprocess.toml"].resources.cpu_only and specs["cpu-preprocess.toml"].resources.count == 0


def test_example_queues_exist_in_the_default_config():
    queues = set(tomllib.loads((EXAMPLES_DIR.parent / "poold.toml").read_text())["queues"]) | {"default"}
    for path in EXAMPLES:
        assert parse_job_file(path).queue in queues, path.name


VISIBLE = {
    "POOLD_JOB_ID": "4242",
    "CUDA_VISIBLE_DEVICES": "GPU-5d3c0a7e",
    "ASCEND_RT_VISIBLE_DEVICES": "0,1",
    "POOLD_FPGA_DEVICES": "0000:03:00.1",
}
SHOWN_FOR_KIND = {"gpu": "CUDA_VISIBLE_DEVICES", "npu": "ASCEND_RT_VISIBLE_DEVICES", "fpga": "POOLD_FPGA_DEVICES"}


def test_example_commands_run_here_and_print_what_the_job_sees():
    """The demo runs every example on a box without accelerators: each must exit 0 in seconds."""
    running = {}
    try:
        for path in EXAMPLES:  # all at once: each sleeps a few seconds
            spec = parse_job_file(path)
            env = {**os.environ, **spec.env, **VISIBLE}
            process = subprocess.Popen(spec.command, env=env, cwd=spec.workdir, stdout=subprocess.PIPE, text=True)
            running[path.name] = (spec, process)
        for name, (spec, process) in running.items():
            out, _ = process.communicate(timeout=10)
            assert process.returncode == 0, name
            assert VISIBLE["POOLD_JOB_ID"] in out, name
            kinds = {"any": ("gpu", "npu"), "cpu": ()}.get(spec.resources.kind, (spec.resources.kind,))
            for kind in kinds:
                assert VISIBLE[SHOWN_FOR_KIND[kind]] in out, (name, out)
    finally:
        for _, process in running.values():
            if process.poll() is None:
                process.kill()
                process.wait()


# --- good files ---------------------------------------------------------------------------

EVERY_KEY = """\
name = "train-7b.v2"
command = ["python", "train.py", "--lr", "3e-4"]
env = { HF_HOME = "/data/hf", _DEBUG = "1" }
workdir = "/srv/work"
queue = "research"
priority = -5
user = "alice"
max_runtime = "2h"

[resources]
count = 2
kind = "gpu"
memory_per_device = "40GiB"
share = 1.0
cpu_cores = 7.5
host_memory = "1.5TiB"
compute_capability = "8.0"
same_node = true
interconnect = "nvlink"
objective = "time"
max_price_per_hour = 9.5

[[resources.accept]]
model = "H100"
speed = 2.5

[[resources.accept]]
model = "A100"
after = "15m"
"""


def test_every_key_is_read():
    spec = parse_job_text(EVERY_KEY)
    assert spec.name == "train-7b.v2"
    assert spec.command == ["python", "train.py", "--lr", "3e-4"]
    assert spec.env == {"HF_HOME": "/data/hf", "_DEBUG": "1"}
    assert (spec.workdir, spec.queue, spec.priority, spec.user) == ("/srv/work", "research", -5, "alice")
    assert spec.max_runtime == 7200
    res = spec.resources
    assert (res.count, res.kind, res.share, res.cpu_cores) == (2, "gpu", 1.0, 7.5)
    assert res.memory_per_device == 40 * 1024
    assert res.host_memory == 1536 * 1024  # 1.5 TiB in MiB
    assert (res.compute_capability, res.same_node, res.interconnect) == ("8.0", True, "nvlink")
    assert (res.objective, res.max_price_per_hour) == ("time", 9.5)
    assert [(entry.model, entry.speed, entry.after) for entry in res.accept] == [("H100", 2.5, None), ("A100", 1.0, 900)]


def test_the_other_keys_are_read():
    spec = parse_job_text(job("""
        [resources]
        kind = "fpga"
        fpga_shell = "xilinx_u250_gen3x16_xdma_shell_4_1"
        """))
    assert spec.resources.fpga_shell == "xilinx_u250_gen3x16_xdma_shell_4_1"
    spec = parse_job_text(job("""
        [resources]
        mig_profile = "3g.40gb"
        """))
    assert spec.resources.mig_profile == "3g.40gb"


def test_defaults():
    spec = parse_job_text(job(""))
    assert (spec.env, spec.workdir, spec.queue, spec.priority, spec.user, spec.max_runtime) == ({}, None, "default", 0, None, None)
    assert spec.retries == 1  # a job lost with its node runs once more, as Slurm's JobRequeue=1 does
    assert parse_job_text(job("retries = 0\n")).retries == 0
    res = spec.resources
    assert (res.count, res.kind, res.memory_per_device, res.share, res.cpu_cores, res.host_memory) == (1, "gpu", None, None, 0, 0)
    assert (res.mig_profile, res.compute_capability, res.fpga_shell) == (None, None, None)
    assert (res.same_node, res.interconnect, res.accept, res.objective, res.max_price_per_hour) == (True, "any", [], "cost", None)


@pytest.mark.parametrize(
    ("written", "mib"),
    [
        ('"40GiB"', 40960),
        ('"40G"', 40960),
        ('"40gb"', 40960),
        ('"512MiB"', 512),
        ('"1.5TiB"', 1572864),  # 1.5 x 1024 x 1024
        ('"2 GiB"', 2048),
        ('"300"', 300),
        ("2048", 2048),
    ],
)
def test_sizes_are_mib(written, mib):
    spec = parse_job_text(job(f"[resources]\nmemory_per_device = {written}\nhost_memory = {written}\n"))
    assert spec.resources.memory_per_device == mib
    assert spec.resources.host_memory == mib


@pytest.mark.parametrize(
    ("written", "seconds"),
    [('"2h"', 7200), ('"1.5h"', 5400), ('"90s"', 90), ('"30m"', 1800), ('"45min"', 2700), ('"1d"', 86400), ("600", 600), ("0.5", 0.5)],
)
def test_durations_are_seconds(written, seconds):
    assert parse_job_text(job(f"max_runtime = {written}\n")).max_runtime == seconds


def test_command_string_is_split_like_a_shell():
    spec = parse_job_text("name = \"a\"\ncommand = \"python train.py --lr '3e-4' --name 'my run' \\\"x y\\\"\"\n")
    assert spec.command == ["python", "train.py", "--lr", "3e-4", "--name", "my run", "x y"]


def test_speed_on_follows_the_accept_list():
    res = parse_job_text(EVERY_KEY).resources
    assert res.speed_on("H100") == 2.5
    assert res.speed_on("a100") == 1.0  # case-insensitive
    assert res.speed_on("L4") is None  # not accepted
    assert parse_job_text(job("")).resources.speed_on("L4") == 1.0  # no list: anything, speed 1


def test_share_of_one_allows_several_devices():
    assert parse_job_text(job("[resources]\ncount = 2\nshare = 1\n")).resources.count == 2


def test_inline_accept_list_keeps_its_order():
    res = parse_job_text(job('[resources]\nkind = "any"\naccept = [{model = "910B"}, {model = "A100", speed = 1.2}]\n')).resources
    assert [(entry.model, entry.speed) for entry in res.accept] == [("910B", 1.0), ("A100", 1.2)]


# --- bad files: each names the key path and its line -------------------------------------

BAD = [
    pytest.param(job('colour = "red"\n'), "line 3: colour: unknown key", id="unknown-top-key"),
    pytest.param(job("[resources]\ncount = 1\ngpus = 2\n"), "line 5: resources.gpus: unknown key", id="unknown-resources-key"),
    pytest.param(job('"gpus[0] x" = 2\n'), 'line 3: "gpus[0] x": unknown key', id="unknown-quoted-key"),
    pytest.param(
        job("""
            [resources]
            [[resources.accept]]
            model = "H100"
            [[resources.accept]]
            model = "A100"
            sped = 1.0
            """),
        "line 8: resources.accept.1.sped: unknown key",
        id="unknown-accept-key",
    ),
    pytest.param(
        job("""
            [resources]
            accept = [
              { model = "H100", speed = 2.5 },
              { model = "A100", sped = 1.0 },
            ]
            """),
        "line 6: resources.accept.1.sped: unknown key",
        id="unknown-key-in-inline-accept",
    ),
    pytest.param(job('[resources]\ncount = "2"\n'), "line 4: resources.count: Input should be a valid integer", id="count-as-string"),
    pytest.param(job("[resources]\ncount = true\n"), "line 4: resources.count: Input should be a valid integer", id="count-as-bool"),
    pytest.param('name = 7\ncommand = ["true"]\n', "line 1: name: Input should be a valid string", id="name-as-number"),
    pytest.param('name = "my job"\ncommand = ["true"]\n', "line 1: name: String should match pattern", id="name-with-space"),
    pytest.param(
        job('# device memory\n[resources]\nmemory_per_device = "40XB"\n'),
        "line 5: resources.memory_per_device: not a size: '40XB'",
        id="size-bad-unit",
    ),
    pytest.param(job('[resources]\nhost_memory = "-1GiB"\n'), "line 4: resources.host_memory: not a size: '-1GiB'", id="size-negative"),
    pytest.param(job("[resources]\nhost_memory = 1.5\n"), "line 4: resources.host_memory: Input should be a valid integer", id="size-float"),
    pytest.param(
        job('[resources]\nmemory_per_device = "2048TiB"\n'),
        "line 4: resources.memory_per_device: size too large: '2048TiB' (at most 1 PiB)",
        id="size-too-large",
    ),
    pytest.param(job('max_runtime = "2 weeks"\n'), "line 3: max_runtime: not a duration: '2 weeks'", id="duration-bad-unit"),
    pytest.param(job("max_runtime = 0\n"), "line 3: max_runtime: Input should be greater than 0", id="duration-zero"),
    pytest.param(job("max_runtime = inf\n"), "line 3: max_runtime: Input should be a finite number", id="duration-inf"),
    pytest.param(job("retries = 11\n"), "line 3: retries: Input should be less than or equal to 10", id="retries-above-10"),
    pytest.param(job("retries = -1\n"), "line 3: retries: Input should be greater than or equal to 0", id="retries-negative"),
    pytest.param(job("retries = true\n"), "line 3: retries: Input should be a valid integer", id="retries-as-bool"),
    pytest.param(job("[resources]\ncpu_cores = nan\n"), "line 4: resources.cpu_cores: Input should be a finite number", id="cpu-nan"),
    pytest.param(job("[resources]\nshare = 1.5\n"), "line 4: resources.share: Input should be less than or equal to 1", id="share-above-1"),
    pytest.param(
        job("[resources]\ncount = 2\nshare = 0.5\n"),
        "line 5: resources.share: share below 1 needs count = 1",
        id="share-below-1-with-count-2",
    ),
    pytest.param(
        job('[resources]\ncount = 2\nmig_profile = "1g.10gb"\n'),
        "line 5: resources.mig_profile: mig_profile needs kind = 'gpu' and count = 1",
        id="mig-with-count-2",
    ),
    pytest.param(
        job('[resources]\nkind = "npu"\nmig_profile = "1g.10gb"\n'),
        "line 5: resources.mig_profile: mig_profile needs kind = 'gpu'",
        id="mig-on-npu",
    ),
    pytest.param(
        job('[resources]\nmig_profile = "1g.10gb"\nshare = 0.5\n'),
        "line 4: resources.mig_profile: mig_profile and share cannot be combined",
        id="mig-with-share",
    ),
    pytest.param(job('[resources]\nmig_profile = "10gb"\n'), "line 4: resources.mig_profile: String should match pattern", id="mig-pattern"),
    pytest.param(
        job('[resources]\nkind = "gpu"\nfpga_shell = "xilinx_u250_gen3x16_xdma_shell_4_1"\n'),
        "line 5: resources.fpga_shell: fpga_shell needs kind = 'fpga'",
        id="fpga-shell-on-gpu",
    ),
    pytest.param(
        job("[resources]\ncount = 8\nnodes = 2\nsame_node = true\n"),
        "line 6: resources.same_node: same_node cannot be combined with nodes",
        id="nodes-with-same-node",
    ),
    pytest.param(
        job("[resources]\nnodes = 2\nshare = 0.5\n"),
        "line 5: resources.share: share below 1 cannot be combined with nodes: the parts of a gang take whole devices",
        id="nodes-with-share",
    ),
    pytest.param(
        job('[resources]\nnodes = 2\nmig_profile = "1g.10gb"\n'),
        "line 5: resources.mig_profile: mig_profile cannot be combined with nodes",
        id="nodes-with-mig",
    ),
    pytest.param(
        job('[resources]\nkind = "cpu"\nnodes = 2\n'),
        "line 5: resources.nodes: nodes needs devices on each node, but the job takes none",
        id="nodes-cpu-only",
    ),
    pytest.param(job("[resources]\nnodes = 0\n"), "line 4: resources.nodes: Input should be greater than or equal to 1", id="nodes-zero"),
    pytest.param(
        job("""
            [resources]
            [[resources.accept]]
            model = "H100"
            [[resources.accept]]
            model = "A100"
            [[resources.accept]]
            model = "h100"
            """),
        "line 9: resources.accept.2.model: accept lists model 'h100' twice",
        id="duplicate-accept-model",
    ),
    pytest.param(
        job('[resources]\naccept = [{ model = "H100", after = "15m" }, { model = "A100" }]\n'),
        "line 4: resources.accept.0.after: the first accept entry is always acceptable",
        id="accept-after-on-first",
    ),
    pytest.param(
        job('[resources]\naccept = [{ model = "H100" }, { model = "A100", after = "soon" }]\n'),
        "line 4: resources.accept.1.after: not a duration: 'soon'",
        id="accept-after-not-a-duration",
    ),
    pytest.param(
        job('[resources]\naccept = [{ model = "L4", speed = 0 }]\n'),
        "line 4: resources.accept.0.speed: Input should be greater than 0",
        id="accept-speed-zero",
    ),
    pytest.param(job("[[resources.accept]]\nspeed = 2\n"), "line 3: resources.accept.0.model: required key is missing", id="accept-no-model"),
    pytest.param(job('[resources]\nkind = "tpu"\n'), "line 4: resources.kind: Input should be 'gpu', 'npu', 'fpga', 'any' or 'cpu'", id="bad-kind"),
    pytest.param(job('[resources]\ninterconnect = "pcie"\n'), "line 4: resources.interconnect: Input should be 'any' or 'nvlink'", id="bad-interconnect"),
    pytest.param(job("priority = 5000\n"), "line 3: priority: Input should be less than or equal to 1000", id="priority-range"),
    pytest.param(
        "name = \"a\"\ncommand = \"echo 'unbalanced\"\n",
        "line 2: command: cannot split the command like a shell: No closing quotation",
        id="command-unbalanced-quotes",
    ),
    pytest.param('name = "a"\ncommand = []\n', "line 2: command: List should have at least 1 item", id="command-empty"),
    pytest.param('name = "a"\ncommand = [\n  "sh",\n  3,\n]\n', "line 4: command.1: Input should be a valid string", id="command-item"),
    pytest.param(job('[env]\nOK = "1"\n"1BAD" = "x"\n'), "line 5: env.1BAD: '1BAD' is not a valid variable name", id="env-leading-digit"),
    pytest.param(job('[env]\nA = "1"\n"MY VAR" = "2"\n'), 'line 5: env."MY VAR": \'MY VAR\' is not a valid variable name', id="env-space"),
    pytest.param(job('env = { "MY-VAR" = "x" }\n'), "line 3: env.MY-VAR: 'MY-VAR' is not a valid variable name", id="env-dash"),
    pytest.param(job("[env]\nDEBUG = 1\n"), "line 4: env.DEBUG: Input should be a valid string", id="env-value-number"),
    pytest.param(job('workdir = "/data/\\u0000run"\n'), "line 3: workdir: must not contain a NUL byte", id="workdir-nul"),
    pytest.param(job('user = "ro\\u0000ot"\n'), "line 3: user: must not contain a NUL byte", id="user-nul"),
    pytest.param(job('[env]\nTOKEN = "a\\u0000b"\n'), "line 4: env.TOKEN: must not contain a NUL byte", id="env-value-nul"),
    pytest.param('name = "a"\ncommand = ["sh", "\\u0000"]\n', "line 2: command.1: must not contain a NUL byte", id="command-nul"),
    pytest.param(job("count = = 3\n"), "line 3: not valid TOML: Invalid value (column 9)", id="toml-syntax"),
    pytest.param('name = "a"\ncommand = ["true"\n', "line 2: not valid TOML: Unclosed array (at the end of the file)", id="toml-unclosed"),
    pytest.param(job('[resources]\ncount = 1\ncount = 2\n'), "line 5: not valid TOML: Cannot overwrite a value", id="toml-duplicate-key"),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_file_names_key_and_line(text, expected):
    problems = problems_of(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_message_starts_with_the_file_name():
    with pytest.raises(JobFileError) as caught:
        parse_job_text(job("colour = 1\n"), source="jobs/train.toml")
    assert str(caught.value) == "jobs/train.toml: line 3: colour: unknown key"


def test_missing_name_and_command_are_both_reported_without_a_line():
    assert problems_of("priority = 1\n") == ["name: required key is missing", "command: required key is missing"]


def test_every_problem_is_reported_once_in_file_order():
    problems = problems_of(job('colour = "red"\n[resources]\ncount = "2"\nkind = "tpu"\n'))
    assert [problem.split(": ")[1] for problem in problems] == ["colour", "resources.count", "resources.kind"]
    assert [problem.split(": ")[0] for problem in problems] == ["line 3", "line 5", "line 6"]


def test_a_fake_table_inside_a_multiline_string_does_not_move_lines():
    text = 'name = "a"\ncommand = ["sh", "-c", """\n[resources]\ncolour = 1\n"""]\ncolour = "red"\n'
    assert problems_of(text) == ["line 6: colour: unknown key"]


def test_parse_job_file_names_the_path(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text(job("[resources]\ngpus = 2\n"))
    with pytest.raises(JobFileError) as caught:
        parse_job_file(path)
    assert str(caught.value) == f"{path}: line 4: resources.gpus: unknown key"


def test_parse_job_file_reports_a_missing_file(tmp_path):
    with pytest.raises(JobFileError) as caught:
        parse_job_file(tmp_path / "nope.toml")
    assert caught.value.problems == ["cannot read: No such file or directory"]


# --- property: anything TOML either parses or raises JobFileError ------------------------

TOP_KEYS = ["name", "command", "env", "workdir", "queue", "priority", "user", "max_runtime", "retries", "resources"]
RESOURCE_KEYS = [
    "count", "kind", "memory_per_device", "share", "cpu_cores", "host_memory", "mig_profile",
    "compute_capability", "fpga_shell", "same_node", "nodes", "interconnect", "accept", "objective", "max_price_per_hour",
]  # fmt: skip
PLAUSIBLE_TEXT = [
    "gpu", "npu", "fpga", "any", "nvlink", "cost", "time", "pack", "H100", "1g.10gb", "8.0",
    "40GiB", "2h", "1.5TiB", "9" * 400 + "GiB", "a b 'c", "A-B", "",
]  # fmt: skip

scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(PLAUSIBLE_TEXT),
    st.text(max_size=12),
    st.dates(),
)
keys = st.one_of(st.sampled_from(TOP_KEYS + RESOURCE_KEYS + ["model", "speed"]), st.text(max_size=8))
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
sizes = st.sampled_from(["40GiB", "512MiB", "1.5TiB", "40XB", "-1GiB", "2048TiB", "9" * 400 + "GiB"]) | st.integers(-10, 2**41)
VALID_TOP = {
    "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,8}", fullmatch=True),
    "command": st.lists(st.text(max_size=5), min_size=1, max_size=3)
    | st.sampled_from(["python train.py", "sh -c 'echo hi'", "echo 'open", ""]),
    "env": st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True) | st.text(max_size=4), st.text(max_size=4), max_size=3
    ),
    "workdir": st.text(max_size=8),
    "queue": st.text(max_size=8),
    "priority": st.integers(-1100, 1100),
    "user": st.text(max_size=5),
    "max_runtime": st.sampled_from(["2h", "90s", "1.5h", "2 weeks", "0", "9" * 400 + "h"]) | st.floats() | st.integers(-5, 10**6),
}
VALID_RESOURCES = {
    "count": st.integers(0, 70),
    "kind": st.sampled_from(["gpu", "npu", "fpga", "any", "cpu", "tpu"]),
    "memory_per_device": sizes,
    "host_memory": sizes,
    "share": st.floats(0, 1.5),
    "cpu_cores": st.floats() | st.integers(-2, 200),
    "mig_profile": st.sampled_from(["1g.10gb", "3g.40gb", "10gb"]),
    "compute_capability": st.sampled_from(["8.0", "9.0", "eight"]),
    "fpga_shell": st.sampled_from(["xilinx_u250_gen3x16_xdma_shell_4_1", ""]),
    "same_node": st.booleans(),
    "nodes": st.integers(-1, 600),
    "interconnect": st.sampled_from(["any", "nvlink", "pcie"]),
    "objective": st.sampled_from(["cost", "time", "pack", "fast"]),
    "max_price_per_hour": st.floats() | st.integers(-1, 100),
}


def mostly(valid):
    """Plausible values three times in four, so that many documents get past the first check."""
    return st.one_of(valid, valid, valid, values)


accept_entries = st.fixed_dictionaries(
    {"model": st.sampled_from(["H100", "A100", "L4", "910B", "U250"]) | st.text(max_size=5)},
    optional={"speed": mostly(st.floats(-1, 5)), "sped": scalars},
)
resources = st.fixed_dictionaries(
    {},
    optional={
        **{key: mostly(valid) for key, valid in VALID_RESOURCES.items()},
        "accept": mostly(st.lists(accept_entries, max_size=3)),
    },
)
documents = st.fixed_dictionaries(
    {"name": mostly(VALID_TOP["name"]), "command": mostly(VALID_TOP["command"])},
    optional={
        **{key: mostly(valid) for key, valid in VALID_TOP.items() if key not in ("name", "command")},
        "resources": mostly(resources),
    },
).flatmap(lambda document: st.dictionaries(keys, values, max_size=1).map(lambda extra: {**extra, **document}))


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else toml_string(key)


def toml_string(text: str) -> str:
    escaped = "".join(
        "\\" + char if char in '"\\' else f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F else char
        for char in text
    )
    return f'"{escaped}"'


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, dt.date)):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{toml_key(key)} = {toml_value(item)}" for key, item in value.items()) + "}"


def is_table_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def toml_document(data: dict, prefix: tuple[str, ...] = ()) -> list[str]:
    """Plain keys first, then ``[tables]`` and ``[[arrays of tables]]`` (their entries inline)."""
    plain = {key: value for key, value in data.items() if not isinstance(value, dict) and not is_table_array(value)}
    lines = [f"{toml_key(key)} = {toml_value(value)}" for key, value in plain.items()]
    for key, value in data.items():
        header = ".".join(toml_key(part) for part in (*prefix, key))
        if isinstance(value, dict):
            lines += [f"[{header}]", *toml_document(value, (*prefix, key))]
        elif is_table_array(value):
            for item in value:
                lines += [f"[[{header}]]", *(f"{toml_key(k)} = {toml_value(v)}" for k, v in item.items())]
    return lines


def comparable(value):
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [comparable(item) for item in value]
    return value


def key_paths(data: dict, prefix: tuple[str, ...] = ()):
    for key, value in data.items():
        yield (*prefix, key)
        if isinstance(value, dict):
            yield from key_paths(value, (*prefix, key))
        elif is_table_array(value):
            for index, item in enumerate(value):
                yield (*prefix, key, str(index))
                yield from key_paths(item, (*prefix, key, str(index)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_toml_either_parses_or_raises_job_file_error(data):
    text = "\n".join(toml_document(data)) + "\n"
    assert comparable(tomllib.loads(text)) == comparable(data), text  # the writer is right
    lines = key_lines(text)
    numbered = text.split("\n")
    for path in key_paths(data):
        assert path in lines, (path, text)
        assert toml_key(path[-1]) in numbered[lines[path] - 1] or path[-1].isdigit(), (path, text)
    try:
        spec = parse_job_text(text)
    except JobFileError as exc:
        assert exc.problems
        for problem in exc.problems:
            match = re.match(r"line ([0-9]+): ", problem)
            assert match is None or 1 <= int(match.group(1)) <= len(numbered), (problem, text)
            assert problem.removeprefix(match.group(0) if match else "").split(": ", 1)[1], problem
    else:
        assert isinstance(spec, JobSpec)
        # The store keeps the spec as JSON, which has no inf or nan.
        assert json.dumps(spec.model_dump(), allow_nan=False, default=str)


@pytest.mark.parametrize(
    ("body", "nodes", "multi_node"),
    [
        ("[resources]\ncount = 8\nnodes = 2\n", 2, True),  # 8 GPUs on each of 2 nodes: 16 in all
        ("[resources]\ncount = 16\nsame_node = false\n", None, True),  # 16 in all, split by the scheduler
        ("[resources]\ncount = 1\nsame_node = false\n", None, False),  # one device is on one node anyway
        ("[resources]\ncount = 4\nnodes = 1\n", 1, False),  # one node: an ordinary job
    ],
)
def test_gangs_parse(body, nodes, multi_node):
    resources = parse_job_text(job(body)).resources
    assert (resources.nodes, resources.multi_node) == (nodes, multi_node)
