"""Config input that used to pass validation and fail later (a traceback, exit 1, after work started):
each is now one line naming the key, exit 2, before anything is loaded or created."""
import json
import socket

import pytest
from omegaconf import OmegaConf
from typer.testing import CliRunner

from aent_cli.cli.app import app
from aent_cli.config.preflight import check_response_length, check_tracking_uri, folder_problem, model_positions
from aent_cli.config import ConfigError
from aent_cli.models.tiny import ARCH

runner = CliRunner()
READ_ONLY = "/proc/aent-preflight"  # procfs takes no new files, also for root (os.access would say yes)


def one_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture
def blocker(tmp_path):
    """A regular file where a folder is expected."""
    path = tmp_path / "a-file"
    path.write_text("x")
    return path


def train(tmp_path, *overrides):
    return runner.invoke(app, ["train", f"trainer.output_dir={tmp_path}/runs",
                               f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", *overrides])


@pytest.mark.parametrize("where", ["file", "read_only"])
def test_train_refuses_an_output_dir_it_cannot_write(where, tmp_path, blocker):
    target = f"{blocker}/runs" if where == "file" else READ_ONLY
    line = one_error_line(train(tmp_path, f"trainer.output_dir={target}"))
    assert f"trainer.output_dir={target}" in line
    assert ("is a file, not a folder" if where == "file" else "not writable") in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no store, no run folder


@pytest.mark.parametrize("uri,says", [
    ("foo://somewhere", "unknown scheme 'foo://'"),
    ("sqlite://relative.db", "sqlite:///relative.db"),
    (f"sqlite:///{READ_ONLY}/m.db", "not writable"),
    ("{blocker}/store", "is a file, not a folder"),
])
def test_train_refuses_a_tracking_uri_mlflow_cannot_open(uri, says, tmp_path, blocker):
    uri = uri.format(blocker=blocker)
    line = one_error_line(train(tmp_path, f"tracking.uri={uri}"))
    assert "tracking.uri=" in line and says in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_tracking_uris_mlflow_can_open_pass(tmp_path):
    with socket.socket() as server:  # a tracking server's port: it accepts a connection
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        for uri in (f"sqlite:///{tmp_path}/new/m.db", "sqlite:///:memory:", f"http://127.0.0.1:{port}",
                    "postgresql+psycopg2://u@h/db", str(tmp_path / "file-store"), f"file://{tmp_path}/fs"):
            check_tracking_uri(uri)
    assert list(tmp_path.iterdir()) == []  # checking creates nothing


def test_a_tracking_server_that_does_not_answer_is_one_line_before_any_folder(tmp_path, blocker):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    line = one_error_line(train(tmp_path, f"tracking.uri=http://127.0.0.1:{port}"))
    assert f"tracking.uri=http://127.0.0.1:{port}: no tracking server answers" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_an_empty_output_dir_is_refused(tmp_path, blocker):
    line = one_error_line(train(tmp_path, "trainer.output_dir="))
    assert "trainer.output_dir: empty" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_folder_problem_on_a_new_nested_folder_creates_nothing(tmp_path):
    assert folder_problem(tmp_path / "x" / "y") == ""
    assert list(tmp_path.iterdir()) == []


def test_eval_refuses_an_output_dir_it_cannot_write(tmp_path, blocker):
    result = runner.invoke(app, ["eval", "-m", "tiny", f"eval.output_dir={blocker}/reports",
                                 f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    assert f"eval.output_dir={blocker}/reports" in one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_report_refuses_an_out_folder_it_cannot_write(tmp_path, blocker):
    result = runner.invoke(app, ["report", "--out", f"{blocker}/out", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"])
    assert f"--out={blocker}/out" in one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_train_refuses_a_response_longer_than_the_models_positions(tmp_path):
    positions = ARCH["max_position_embeddings"]
    line = one_error_line(train(tmp_path, f"rollout.max_new_tokens={positions}"))
    assert f"rollout.max_new_tokens={positions}" in line and f"{positions} positions" in line
    assert list(tmp_path.iterdir()) == []


def test_response_length_reads_a_local_models_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 128}))
    model = OmegaConf.create({"path": str(tmp_path)})
    assert model_positions(model) == 128
    check_response_length("rollout.max_new_tokens", 127, model)
    with pytest.raises(ConfigError, match=r"rollout\.max_new_tokens=128: the model .* has 128 positions"):
        check_response_length("rollout.max_new_tokens", 128, model)
    assert model_positions(OmegaConf.create({"path": "Qwen/Qwen2.5-Math-1.5B"})) is None  # hub ids: not read here
    assert model_positions(OmegaConf.create({"path": "tiny"})) == ARCH["max_position_embeddings"]


def test_a_list_where_a_group_option_is_expected_is_refused(tmp_path):
    line = one_error_line(train(tmp_path, "algo=[aent,grpo]"))
    assert "algo=[aent,grpo]" in line and "one option, not a list" in line
    assert list(tmp_path.iterdir()) == []


def test_stop_after_zero_is_refused(tmp_path):
    line = one_error_line(train(tmp_path, "trainer.stop_after=0"))
    assert "trainer.stop_after=0" in line and ">= 1" in line
    assert list(tmp_path.iterdir()) == []


def test_a_bad_uri_from_the_environment_is_named_as_such(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "foo://x")
    result = runner.invoke(app, ["train", f"trainer.output_dir={tmp_path}/runs"])
    assert "MLFLOW_TRACKING_URI=foo://x: unknown scheme" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []
