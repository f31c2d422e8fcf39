"""The project's nginx (docker/nginx/) run outside Docker, for the deploy tests and the
bench: its two files rendered into a folder of the run's own with local ports swapped
in, and the command that runs nginx on them in the foreground."""

import os
import re
import resource
import shutil
from pathlib import Path

from tests.support.processes import PROJECT_ROOT

NGINX_DIR = PROJECT_ROOT / "docker" / "nginx"
# The temporary folders nginx creates at start; Debian's defaults are root's.
_TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_binary() -> str | None:
    """nginx on PATH or Debian's /usr/sbin/nginx (often not on a user's PATH), else None."""
    return shutil.which("nginx") or shutil.which("/usr/sbin/nginx")


def _swap_once(text: str, shipped: str, here: str, file: str) -> str:
    # The shipped text changed: fail loudly rather than run a config the caller didn't mean.
    if text.count(shipped) != 1:
        raise RuntimeError(f"docker/nginx/{file}: expected one `{shipped}`")
    return text.replace(shipped, here)


def render_nginx(
    folder: Path,
    app_ports: list[int],
    port: int,
    *,
    client_timeout: int | None = None,
    access_log: bool = True,
) -> Path:
    """docker/nginx/'s two files in `folder`, returning nginx.conf's path: the upstream
    lists `app_ports` (the shipped one names the compose service, which Docker's DNS
    resolves to every replica), nginx listens on 127.0.0.1:`port` and keeps its
    temporary files in `folder`. `client_timeout` (seconds) replaces the shipped 20 s
    and 30 s a client may take over its head and its body, for tests that stall on
    purpose; `access_log=False` turns the access log off."""
    site = (NGINX_DIR / "chatkit.conf").read_text()
    swaps = {
        "server app:8000;": " ".join(f"server 127.0.0.1:{p};" for p in app_ports),
        "listen 8080;": f"listen 127.0.0.1:{port};",
    }
    if client_timeout is not None:
        swaps["client_header_timeout 20s;"] = f"client_header_timeout {client_timeout}s;"
        swaps["client_body_timeout 30s;"] = f"client_body_timeout {client_timeout}s;"
    for shipped, here in swaps.items():
        site = _swap_once(site, shipped, here, "chatkit.conf")
    (folder / "chatkit.conf").write_text(site)
    main = (NGINX_DIR / "nginx.conf").read_text()
    temp = "".join(f"    {kind}_temp_path {folder / kind};\n" for kind in _TEMP_KINDS)
    main = _swap_once(main, "http {\n", "http {\n" + temp, "nginx.conf")
    if not access_log:
        main = re.sub(r"access_log [^;]+;", "access_log off;", main)
    # Raising the soft limit past the hard one needs a privilege containers lack too;
    # Docker's hard limit is far higher than a test machine's may be.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 65536:
        main = _swap_once(
            main, "worker_rlimit_nofile 65536;", f"worker_rlimit_nofile {hard};", "nginx.conf"
        )
    (folder / "nginx.conf").write_text(main)
    return folder / "nginx.conf"


def nginx_command(binary: str, config: Path) -> list[str]:
    """nginx in the foreground on `config` (from render_nginx), its pid file and error
    log beside it."""
    folder = config.parent
    # As root, nginx would hand its workers to `nobody`, who cannot reach the run's folder.
    user = "user root;" if os.geteuid() == 0 else ""
    return [
        binary,
        "-c",
        str(config),
        "-e",
        str(folder / "error.log"),
        "-g",
        f"daemon off; pid {folder / 'nginx.pid'}; {user}",
    ]
