"""Copy what the runwire server runs into a fresh root filesystem (the image's
last stage is this tree alone): run by deploy/Containerfile's build stage.

Included: /usr/bin/python3.11 and the standard library (without its tests,
tkinter, idle, ensurepip), the virtualenv /opt/runwire, every shared library
the interpreter and the compiled extensions load (found with ldd, plus
libgcc_s, which glibc loads when a thread exits), CA certificates, and a
minimal /etc. Nothing that is a shell or a tool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

UID = GID = 10001
VENV = Path("/opt/runwire")
STDLIB = Path("/usr/lib/python3.11")
SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data"}
# OpenSSL's default paths (/usr/lib/ssl/certs -> /etc/ssl/certs, hashed links
# into /usr/share/ca-certificates), Debian's sitecustomize, and os-release.
EXTRA_PATHS = [
    Path("/etc/ssl/certs"),
    Path("/etc/ssl/openssl.cnf"),
    Path("/usr/share/ca-certificates"),
    Path("/etc/python3.11"),
    Path("/etc/os-release"),
]


def _copy_path(src: Path, root: Path) -> None:
    """Copy `src` to the same path under `root`, symlinks as symlinks, and their targets."""
    dest = root / src.relative_to("/")
    if dest.exists() or dest.is_symlink():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        target = os.readlink(src)
        dest.symlink_to(target)
        _copy_path((src.parent / target).resolve(), root)
    elif src.is_dir():
        shutil.copytree(src, dest, symlinks=True)
    else:
        shutil.copy2(src, dest)


def _libraries(binaries: list[Path]) -> set[Path]:
    found: set[Path] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) > parts.index("=>") + 1:
                path = parts[parts.index("=>") + 1]
            elif parts and parts[0].startswith("/"):
                path = parts[0]
            else:
                continue
            if path.startswith("/"):
                found.add(Path(path))
    return found


def main(root: Path) -> None:
    root.mkdir(parents=True)
    # Debian bookworm's merged /usr: the top-level directories are symlinks.
    (root / "usr").mkdir()
    for name in ("bin", "lib", "lib64", "sbin"):
        (root / "usr" / name).mkdir()
        (root / name).symlink_to(f"usr/{name}")
    _copy_path(Path("/usr/bin/python3.11"), root)
    dest = root / STDLIB.relative_to("/")
    shutil.copytree(
        STDLIB,
        dest,
        symlinks=True,
        ignore=lambda d, names: [n for n in names if Path(d) == STDLIB and n in SKIP_STDLIB],
    )
    shutil.copytree(VENV, root / VENV.relative_to("/"), symlinks=True)
    # Installers in the image would only be ways to change it.
    site = root / VENV.relative_to("/") / "lib/python3.11/site-packages"
    for pattern in (
        "pip",
        "pip-*",
        "setuptools",
        "setuptools-*",
        "pkg_resources",
        "_distutils_hack",
    ):
        for path in site.glob(pattern):
            shutil.rmtree(path)
    (site / "distutils-precedence.pth").unlink(missing_ok=True)
    for script in (root / VENV.relative_to("/") / "bin").glob("pip*"):
        script.unlink()
    binaries = [Path("/usr/bin/python3.11")]
    for tree in (STDLIB / "lib-dynload", VENV / "lib"):
        binaries += [p for p in tree.rglob("*.so*") if p.is_file()]
    libraries = _libraries(binaries)
    libraries |= set(Path("/usr/lib/x86_64-linux-gnu").glob("libgcc_s.so*"))
    for lib in sorted(libraries):
        if not lib.is_relative_to("/opt"):
            _copy_path(lib, root)
    for extra in EXTRA_PATHS:
        if extra.exists():
            _copy_path(extra, root)
    ssl = root / "usr/lib/ssl"
    ssl.mkdir()
    (ssl / "certs").symlink_to("/etc/ssl/certs")
    (ssl / "openssl.cnf").symlink_to("/etc/ssl/openssl.cnf")
    # The default CA file, for libraries that read a file rather than a directory.
    (ssl / "cert.pem").symlink_to("/etc/ssl/certs/ca-certificates.crt")
    etc = root / "etc"
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/sbin/nologin\n"
        f"runwire:x:{UID}:{GID}:runwire:/var/lib/runwire:/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nrunwire:x:{GID}:\nnogroup:x:65534:\n")
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    tmp = root / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    data = root / "var/lib/runwire"
    data.mkdir(parents=True)
    os.chown(data, UID, GID)
    data.chmod(0o750)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
