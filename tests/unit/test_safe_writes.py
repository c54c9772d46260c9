"""One write path for every file diffcore writes: regular files only, checked before any model runs,
replaced atomically, never two outputs on one file, never an output on an input."""
from __future__ import annotations

import os
import re
import subprocess

import numpy as np
import pytest

import diffcore
from diffcore import DiffcoreError
from diffcore.cli import main
from diffcore.files import check_distinct, check_target, write_text

from .test_cli import SPEC, assert_one_error_line, fake_compare, inputs_file, run  # noqa: F401

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _special(tmp_path, kind):
    path = tmp_path / f"special-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        target = tmp_path / "victim.txt"
        target.write_text("precious")
        path.symlink_to(target)
    elif kind == "directory":
        path.mkdir()
    elif kind == "device":
        if not IS_ROOT:
            pytest.skip("creating a device node needs root")
        os.mknod(path, 0o666 | __import__("stat").S_IFCHR, os.makedev(1, 3))
    return path


@pytest.mark.parametrize("kind, words", [("fifo", "a FIFO"), ("symlink", "a symbolic link"),
                                         ("directory", "a directory"), ("device", "a character device")])
def test_force_never_replaces_anything_but_a_regular_file(capsys, tmp_path, fake_compare, kind, words):
    path = _special(tmp_path, kind)
    before = os.lstat(path)
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--json", path, "--force")
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, f"{re.escape(words)}; diffcore writes regular files only")
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    if kind == "symlink":
        assert (tmp_path / "victim.txt").read_text() == "precious"


def test_the_library_write_path_refuses_a_symlink_swapped_in_after_the_check(tmp_path):
    path = tmp_path / "out.json"
    victim = tmp_path / "victim"
    victim.write_text("precious")

    def write(handle):  # the path becomes a symlink while the report is being written
        path.symlink_to(victim)
        handle.write("new")
    with pytest.raises(DiffcoreError, match="a symbolic link"):
        diffcore.files.write_atomic(path, write, force=True)
    assert victim.read_text() == "precious" and os.path.islink(path)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".diffcore-")]


def test_an_existing_regular_file_needs_force_and_is_then_replaced_whole(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("old")
    with pytest.raises(DiffcoreError, match="already exists; pass --force"):
        write_text(path, "new")
    write_text(path, "new", force=True)
    assert path.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["r.txt"]


def test_the_same_path_for_two_outputs_is_refused_before_running(capsys, tmp_path, fake_compare):
    out = tmp_path / "r.out"
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--json", out, "--html", out, "--force")
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, "--json and --html name the same file")


def test_an_output_equal_to_the_inputs_file_is_refused_even_through_a_link(capsys, tmp_path, fake_compare,
                                                                            inputs_file):
    link = tmp_path / "alias.npz"
    link.symlink_to(inputs_file)
    before = open(inputs_file, "rb").read()
    for target in (inputs_file, tmp_path / "." / "inputs.npz"):
        code, _, err = run(capsys, "compare", SPEC, SPEC, "--inputs", link, "--json", target, "--force")
        assert code == 2 and not fake_compare["calls"]
        assert_one_error_line(err, "is the --inputs file: writing it would destroy an input")
    assert open(inputs_file, "rb").read() == before


def test_check_distinct_refuses_hard_links_to_one_file(tmp_path):
    a = tmp_path / "a"
    a.write_text("x")
    os.link(a, tmp_path / "b")
    with pytest.raises(DiffcoreError, match="same file"):
        check_distinct({"--json": a, "--html": tmp_path / "b"})


def test_a_file_name_too_long_is_one_line_before_running(capsys, tmp_path, fake_compare):
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--json", tmp_path / ("n" * 300 + ".json"))
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, "(File name too long|longer than this filesystem allows)")


def test_a_name_at_the_limit_is_written(tmp_path):
    path = tmp_path / ("n" * 250 + ".json")  # its temporary file must not need a longer name
    write_text(path, "{}")
    assert path.read_text() == "{}"


@pytest.fixture
def small_mount(tmp_path):
    """A tiny tmpfs (root only), read-only on request; skipped where mounting is not allowed."""
    mounted = []

    def make(options):
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        mounted.append(point)
        return point
    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_a_read_only_output_folder_is_refused_before_any_model_runs(capsys, fake_compare, small_mount):
    folder = small_mount("size=64k,ro")
    code, _, err = run(capsys, "compare", SPEC, SPEC, "--json", folder / "r.json")
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, "is not writable")


def test_a_full_disk_keeps_the_previous_file_and_leaves_no_temporary(small_mount):
    folder = small_mount("size=64k")
    path = folder / "report.json"
    write_text(path, "previous")
    with pytest.raises(DiffcoreError, match="No space left on device"):
        write_text(path, "x" * (1 << 20), force=True)
    assert path.read_text() == "previous"
    assert os.listdir(folder) == ["report.json"]


def test_a_closed_or_read_only_stdout_is_a_usage_error_not_a_crash(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    import sys

    for redirect in (">&-", "1</dev/null"):
        done = subprocess.run(f"{sys.executable} -m diffcore env {redirect}", shell=True, env=env,
                              capture_output=False, stderr=subprocess.PIPE, text=True)
        assert done.returncode == 2, done.stderr
        assert_one_error_line(done.stderr, "standard output is (closed|open read-only)")


def test_autocast_with_an_onnx_test_model_is_refused(capsys, tmp_path, fake_compare):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not really")
    code, _, err = run(capsys, "compare", SPEC, model, "--test-autocast", "float16")
    assert code == 2 and not fake_compare["calls"]
    assert_one_error_line(err, "--test-autocast applies to a torch TEST model")


def test_check_target_passes_none_and_a_fresh_name(tmp_path):
    check_target(None, False)
    check_target(tmp_path / "fresh.json", False)
    assert not os.listdir(tmp_path)  # the writability probe leaves nothing behind
