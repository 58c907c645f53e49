"""Run as a script by test_resume_strict: a DeepSpeedBackend (one CPU process, ZeRO stage argv[2]) on
a small module saves a ZeRO checkpoint, lists what it pickles beyond tensors, loads it back through
the backend's safe loader, then loads a copy whose optimizer file carries a pickle payload."""
import json
import os
import sys
from pathlib import Path

import torch


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path(sys.argv[1]) / "payload_ran",))


def main() -> None:
    out, stage = Path(sys.argv[1]), int(sys.argv[2])
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=sys.argv[3])
    from aent_cli.config import compose_config
    from aent_cli.engine.deepspeed_backend import DeepSpeedBackend
    from aent_cli.engine.distributed import LOCAL
    from aent_cli.errors import UserError

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    trainer = compose_config([f"trainer.zero_stage={stage}", "trainer.micro_batch_size=2"]).trainer
    backend = DeepSpeedBackend(model, torch.optim.AdamW(model.parameters(), lr=1e-2), trainer, LOCAL,
                               torch.device("cpu"))
    backend.backward(backend.engine.module(torch.randn(2, 8)).square().mean())
    backend.step(1.0)
    root = out / "zero"
    backend.engine.save_checkpoint(str(root), tag="t", save_latest=False)
    files = sorted((root / "t").glob("*.pt"))
    report = {"unsafe": {f.name: torch.serialization.get_unsafe_globals_in_checkpoint(str(f)) for f in files}}
    backend.load_zero(root, "t")
    report["loaded"] = True
    target = next((f for f in files if "optim" in f.name), files[0])  # stage 0: all in the model states
    saved = torch.load(target, weights_only=False)
    saved["payload"] = Payload()
    torch.save(saved, target)
    report["target"] = target.name
    try:
        backend.load_zero(root, "t")
        report["refused"] = None
    except UserError as exc:
        report["refused"] = str(exc)
    report["payload_ran"] = (out / "payload_ran").exists()
    (out / "report.json").write_text(json.dumps(report))
    backend.close()


if __name__ == "__main__":
    main()
