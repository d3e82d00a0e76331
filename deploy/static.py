"""The files the gateway serves itself, in one layout under ``MEDIAI_STATIC_DIR``: the web
console, the whole API's OpenAPI document, and its viewer with Swagger UI's assets. Both
Caddyfiles read this layout; `mediai up` links it to the working tree (a rebuilt console is
served at once), the gateway image copies it (deploy/production/Dockerfile):

    web/          the console, built into web/dist by `make web`
    docs/         openapi.json (made by `mediai docs openapi`)
    apidocs/      the viewer's page (deploy/apidocs)
    swagger-ui/   Swagger UI's files, from the PyPI package swagger-ui-bundle-v2

Only the standard library and that package: the image's build runs this without the rest of
MediAI's dependencies.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WEB_DIST = REPO / "web" / "dist"


def swagger_ui_dir() -> Path:
    """Swagger UI's files, from the PyPI package swagger-ui-bundle-v2 (group `gateway`)."""
    from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

    return Path(str(swagger_ui_path))


def sources() -> dict[str, Path]:
    """Each folder of the layout, and where it comes from."""
    return {
        "web": WEB_DIST,
        "docs": REPO / "docs",
        "apidocs": REPO / "deploy" / "apidocs",
        "swagger-ui": swagger_ui_dir(),
    }


def assemble(target: Path, *, link: bool) -> Path:
    """The layout under ``target``: symbolic links to the sources (``link``), or copies of
    them. The docs folder holds only openapi.json (the rest of docs/ is not served)."""
    target.mkdir(parents=True, exist_ok=True)
    for name, source in sources().items():
        place = target / name
        if place.is_symlink() or place.is_file():
            place.unlink()
        elif place.is_dir():
            shutil.rmtree(place)
        if name == "docs":
            place.mkdir()
            document = source / "openapi.json"
            if link:
                (place / "openapi.json").symlink_to(document)
            else:
                shutil.copy2(document, place / "openapi.json")
        elif link:
            place.symlink_to(source, target_is_directory=True)
        else:
            shutil.copytree(source, place)
    return target


if __name__ == "__main__":  # python -m deploy.static TARGET (the image's build)
    if len(sys.argv) != 2:
        sys.exit("usage: python -m deploy.static TARGET")
    missing = [str(p) for p in sources().values() if not p.exists()]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} (run `make web` and `mediai docs openapi`)")
    print(assemble(Path(sys.argv[1]), link=False))
