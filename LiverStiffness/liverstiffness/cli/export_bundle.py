"""``liverstiffness export-bundle``: a stiffness or liver segmentation model folder as a MONAI bundle."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "export-bundle", help="write a model folder as a MONAI bundle",
        description="Writes OUT as a MONAI bundle: configs/metadata.json (MONAI's metadata schema, checked offline "
                    "against the copy shipped with liverstiffness), configs/inference.json (runs the same code as "
                    "`predict` or `segment`: python -m monai.bundle run --config_file OUT/configs/inference.json "
                    "--meta_file OUT/configs/metadata.json --bundle_root OUT ...), models/ (the model folder's "
                    "files, unchanged) and docs/ (the model card; a segmentation model's LICENSE-WEIGHTS.md). "
                    "--model and --seg-model accept the bundle folder.")
    p.add_argument("model_dir", metavar="MODEL_DIR",
                   help="a stiffness model folder (model.json) or a segmentation model folder (seg_model.json)")
    p.add_argument("out", metavar="OUT", help="the bundle folder to write (new or empty)")
    p.add_argument("--authors", help="metadata 'authors' (default: the LiverStiffness developers)")
    p.add_argument("--copyright", help="metadata 'copyright' (default: names the weights' terms and the code's licence)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bundle_export import DEFAULT_AUTHORS, SCHEMA_NAME, export_bundle

    kind, verified = export_bundle(args.model_dir, args.out, args.authors or DEFAULT_AUTHORS, args.copyright)
    check = (f"metadata verified against MONAI's schema {SCHEMA_NAME}" if verified
             else "metadata NOT verified: install jsonschema, which MONAI's verify_metadata needs")
    print(f"{'Stiffness' if kind == 'stiffness' else 'Segmentation'} model bundle → {args.out} ({check})")
    return 0
