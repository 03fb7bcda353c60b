"""``export``: a saved checkpoint as an ONNX graph, to run the trained model with ONNX Runtime or another runtime."""
from __future__ import annotations

from ..onnx_export import FORMATS, INSTALL, export, output_paths, require_onnx
from .common import add_checkpoint_option, path
from .train import check_output_file, checkpoint_task


def add_export_command(sub):
    """Add ``export --checkpoint DIR --format onnx OUT.onnx``."""
    p = sub.add_parser("export", help=f"write a checkpoint's model as an ONNX graph (needs {INSTALL})")
    add_checkpoint_option(p)
    p.add_argument("--format", choices=FORMATS, default="onnx", help="the file format (default onnx)")
    p.add_argument("output", type=path, metavar="OUT.onnx",
                   help="the file to write; a translation checkpoint writes OUT.encoder.onnx and OUT.decoder.onnx")
    p.add_argument("--force", action="store_true", help="replace output files that exist")
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    """Check the checkpoint, the output names and the onnx package, then write the graph(s) and name them."""
    checkpoint_task(args.checkpoint)
    require_onnx()
    check_output_file(args.output, "OUT", {"onnx"})
    paths = output_paths(args.checkpoint, args.output)
    for target in paths:
        if target.exists() and not args.force:
            raise ValueError(f"{target}: exists; give another file name, or add --force to replace it")
    for written in export(args.checkpoint, args.output):
        print(f"wrote {written}")
    return 0
