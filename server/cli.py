"""`hearth-server`: the ML team's command line (PKI, signed bundles and revocations, SuperLink)."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from policy.signed_bundle import MANIFEST_CONFIG_KEY, REVOCATIONS_CONFIG_KEY
from server.home import server_home
from server.model_cli import model_app
from server.passphrase import PassphraseError, org_key_passphrase
from server.pki import PkiError, add_device, init_pki
from server.registry import RegistryError, head, read_registry, since
from server.signing import (
    DEFAULT_VALID_DAYS,
    ORG_KEY,
    SigningError,
    build_bundle,
    bundle_contents,
    describe_contents,
    generate_org_key,
    load_org_key,
    sign_bundle,
    sign_revocations,
    write_revocations,
    write_signature,
)
from server.up import LinkConfig, UpError, campaign_hint, register_devices, start_superlink

app = typer.Typer(name="hearth-server", no_args_is_help=True, add_completion=False)
pki_app = typer.Typer(
    name="pki",
    help="The federation's CA, SuperLink certificate and device keys.",
    no_args_is_help=True,
)
app.add_typer(pki_app, name="pki")
campaign_app = typer.Typer(
    name="campaign",
    help="Run a campaign against this host's SuperLink and say what it did.",
    no_args_is_help=True,
)
app.add_typer(campaign_app, name="campaign")
app.add_typer(model_app, name="model")


def _fail(message: str) -> typer.Exit:
    typer.echo(f"hearth-server: {message}", err=True)
    return typer.Exit(1)


@app.callback()
def main() -> None:
    """Run a hearth federation: keys, signed bundles, the SuperLink."""


@pki_app.command("init")
def pki_init(
    directory: Annotated[Path, typer.Argument(help="a new directory for the PKI")],
    hostname: Annotated[
        list[str] | None, typer.Option("--hostname", help="SAN hostname (repeatable)")
    ] = None,
    ip: Annotated[
        list[str] | None, typer.Option("--ip", help="SAN IP address (repeatable)")
    ] = None,
    org_key_dir: Annotated[
        Path | None,
        typer.Option(
            "--org-key-dir",
            help="where the encrypted org signing key goes: a directory kept offline "
            "(default: DIRECTORY, and then move it before `up`)",
        ),
    ] = None,
) -> None:
    """Create the CA, the SuperLink TLS certificate and the org bundle-signing key.

    The signing key is written encrypted with a passphrase (asked twice, or
    HEARTH_ORG_KEY_PASSPHRASE); its public half always goes to DIRECTORY.
    """
    try:
        passphrase = org_key_passphrase(new=True)
        pki = init_pki(
            directory,
            hostnames=hostname if hostname is not None else ["localhost"],
            ips=ip if ip is not None else ["127.0.0.1"],
        )
        private, public = generate_org_key(
            org_key_dir or directory, passphrase, public_directory=directory
        )
    except (PkiError, SigningError, PassphraseError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"CA certificate (give to every laptop): {pki.ca_cert}")
    typer.echo(f"SuperLink certificate: {pki.superlink_cert}")
    typer.echo(f"org signing public key (give to every laptop): {public}")
    typer.echo(f"org signing key (encrypted; keep it offline): {private}")
    if private.parent.resolve() == directory.resolve():
        typer.echo(
            f"move {private} off this machine before `hearth-server up`: up refuses to start "
            "while the SuperLink's user can read it"
        )


@pki_app.command("add-device")
def pki_add_device(
    name: Annotated[str, typer.Argument(help="the device's name, e.g. alice-laptop")],
    pki_dir: Annotated[Path, typer.Option("--pki", help="the PKI directory")] = Path("pki"),
) -> None:
    """Create one device's SuperNode key pair (the private key goes to that laptop only)."""
    try:
        private, public = add_device(pki_dir, name)
    except PkiError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"private key (to {name} only): {private}")
    typer.echo(f"public key (registered by `hearth-server up`): {public}")


@pki_app.command("registry")
def pki_registry(
    pki_dir: Annotated[Path, typer.Option("--pki", help="the PKI directory")] = Path("pki"),
    since_head: Annotated[
        str | None,
        typer.Option("--since", help="a head hash countersigned before: show what came after"),
    ] = None,
) -> None:
    """List every device enrolment and registration, check the hash chain, print its head.

    The chain is not signed here (the org key stays offline): the privacy team
    countersigns the printed head hash, and a later registry must still contain it.
    """
    try:
        entries = read_registry(pki_dir)
        shown = since(entries, since_head) if since_head else entries
    except RegistryError as exc:
        raise _fail(str(exc)) from None
    for entry in shown:
        line = f"{entry.seq:>4}  {entry.time}  {entry.event:<10}  {entry.device}  "
        typer.echo(f"{line}{entry.fingerprint}  {entry.detail}".rstrip())
    typer.echo(f"head {head(entries)} ({len(entries)} entries, chain intact)")
    typer.echo(
        "not signed here: the org signing key stays offline; the privacy team countersigns "
        "this head hash, and `--since HEAD` later shows what was appended after it"
    )


def _positive_days(value: float) -> float:
    if not value > 0:
        raise typer.BadParameter("must be a positive number of days")
    return value


@app.command("sign")
def sign(
    version: Annotated[
        int,
        typer.Option(
            "--version",
            min=1,
            help="release number: higher than every release before it (devices refuse a lower"
            " one); re-signing the same bundle may reuse its number",
        ),
    ],
    target: Annotated[Path, typer.Argument(help="an app directory or a built .fab")] = Path("."),
    valid_days: Annotated[
        float,
        typer.Option("--valid-days", callback=_positive_days, help="days the bundle may run"),
    ] = DEFAULT_VALID_DAYS,
    key: Annotated[Path, typer.Option("--key", help="org signing key")] = Path("pki") / ORG_KEY,
    out: Annotated[
        Path | None, typer.Option("--out", help="where to write the bundle built from a directory")
    ] = None,
) -> None:
    """Sign a bundle's manifest with the org key; writes NAME.fab.sig and prints the token.

    The manifest binds the bundle's SHA-256, app id and Flower version to a
    release number and a validity window: devices refuse a lower release than
    one they accepted, and a bundle outside its window.
    """
    try:
        org_key = load_org_key(key)
        if target.is_dir():
            fab = build_bundle(target)
            fab_path = out or Path("dist") / "hearth.fab"
            fab_path.parent.mkdir(parents=True, exist_ok=True)
            fab_path.write_bytes(fab)
        elif target.is_file():
            fab, fab_path = target.read_bytes(), target
        else:
            raise SigningError(f"{target} is neither an app directory nor a bundle")
        signature = sign_bundle(fab, org_key, version=version, valid_days=valid_days)
    except SigningError as exc:
        raise _fail(str(exc)) from None
    sig_path = write_signature(fab_path, signature)
    manifest = signature.manifest
    packed = bundle_contents(fab)
    typer.echo(f"packed {len(packed)} files ({len(fab):,} bytes compressed):")
    for line in describe_contents(fab):
        typer.echo(line)
    typer.echo(f"bundle {fab_path} sha256 {signature.sha256}")
    typer.echo(
        f"manifest: {manifest.app_id} {manifest.fab_version}, release {manifest.version}, "
        f"valid {_utc(manifest.not_before)} to {_utc(manifest.expires)}, key {manifest.key_id}"
    )
    typer.echo(f"signed manifest: {sig_path}")
    typer.echo(f"run it with: --run-config \"{MANIFEST_CONFIG_KEY}='{signature.token}'\"")


@app.command("revoke")
def revoke(
    version: Annotated[
        int,
        typer.Option("--version", min=1, help="list number: higher than the last list published"),
    ],
    key_ids: Annotated[
        list[str] | None,
        typer.Argument(help="every key id revoked so far (none: a fresh, empty list)"),
    ] = None,
    valid_days: Annotated[
        float,
        typer.Option(
            "--valid-days",
            callback=_positive_days,
            help="days the list stays current: a device whose newest list expired refuses"
            " every bundle until a run brings a newer one",
        ),
    ] = DEFAULT_VALID_DAYS,
    key: Annotated[Path, typer.Option("--key", help="org signing key")] = Path("pki") / ORG_KEY,
    out: Annotated[Path, typer.Option("--out", help="where to write the signed list")] = Path(
        "dist/revocations.sig"
    ),
) -> None:
    """Sign a revocation list: devices refuse bundles signed by the listed key ids.

    A list names every key revoked so far (a newer list replaces an older one).
    Pass it to every run so devices keep a current list.
    """
    try:
        org_key = load_org_key(key)
        signed = sign_revocations(
            org_key, version=version, revoked=key_ids or (), valid_days=valid_days
        )
    except SigningError as exc:
        raise _fail(str(exc)) from None
    write_revocations(out, signed)
    listed = signed.revocations
    typer.echo(
        f"revocation list {listed.version}: {', '.join(listed.revoked) or 'no key'} revoked, "
        f"valid {_utc(listed.not_before)} to {_utc(listed.expires)}"
    )
    typer.echo(f"signed list: {out}")
    typer.echo(f"run with: --run-config \"{REVOCATIONS_CONFIG_KEY}='{signed.token}'\"")


def _utc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


@app.command("up")
def up(
    pki_dir: Annotated[Path, typer.Option("--pki", help="the PKI directory")] = Path("pki"),
    state: Annotated[
        Path | None, typer.Option("--state", help="SuperLink state (default: server home)")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="laptops' address (Fleet API only)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="laptops' HTTPS port (Fleet API only)")] = (
        9093
    ),
    control_port: Annotated[
        int,
        typer.Option("--control-port", help="HTTPS port of the Control API, on 127.0.0.1 only"),
    ] = 9094,
) -> None:
    """Start the SuperLink (TLS, SuperNode auth, database) and register the PKI's devices.

    Refuses to start while the org signing key is under the PKI directory and
    usable by this user. Laptops reach only the Fleet API on HOST:PORT; `flwr`
    reaches the Control API on 127.0.0.1:CONTROL_PORT.
    """
    config = LinkConfig(
        pki_dir.resolve(),
        (state or server_home() / "superlink").resolve(),
        host,
        port,
        control_port,
    )
    try:
        proc = start_superlink(config, config.state_dir / "superlink.log")
    except (PkiError, UpError) as exc:
        raise _fail(str(exc)) from None
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        for name, outcome in register_devices(config).items():
            typer.echo(f"device {name}: {outcome}")
        typer.echo(campaign_hint(config))
        proc.wait()
    except UpError as exc:
        proc.terminate()
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        proc.terminate()
    proc.wait()


@app.command("sign-policy")
def sign_policy_command(
    policy: Annotated[Path, typer.Argument(help="the privacy policy TOML the laptops pin")],
    key: Annotated[Path, typer.Option("--key", help="org signing key")] = Path("pki") / ORG_KEY,
    out: Annotated[
        Path | None, typer.Option("--out", help="where to write the signature (POLICY.sig)")
    ] = None,
) -> None:
    """Sign a privacy policy's SHA-256 with the org key; writes POLICY.sig, prints the token."""
    from privacy.policy import PolicyError  # noqa: PLC0415 (only this command needs them)
    from server.policy_signing import sign_policy, write_policy_signature  # noqa: PLC0415

    try:
        org_key = load_org_key(key)
        text = policy.read_bytes()
        signature = sign_policy(text, org_key, str(policy))
    except OSError as exc:
        raise _fail(f"cannot read {policy}: {exc.strerror}") from None
    except (SigningError, PolicyError) as exc:
        raise _fail(str(exc)) from None
    sig_path = write_policy_signature(policy, signature, out)
    typer.echo(f"policy {policy} sha256 {signature.file_sha256}")
    typer.echo(f"policy hash (rounds carry it): {signature.policy_hash}")
    typer.echo(f"signature: {sig_path}")
    typer.echo(
        f"laptops pin it with: hearth join ... --policy {policy.name} "
        f"--policy-signature '{signature.token}'"
    )


@campaign_app.command("run")
def campaign_run(
    app_dir: Annotated[Path, typer.Argument(help="the app directory (this repository)")] = Path(
        "."
    ),
    run_config: Annotated[
        str,
        typer.Option(
            "--run-config",
            help="flwr run's overrides, e.g. \"bundle-signature='TOKEN' secaggplus=true "
            'num-server-rounds=3"',
        ),
    ] = "",
    checkpoint_dir: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint-dir",
            help="where the campaign's checkpoints and round outcomes go "
            "(default: HEARTH_HOME/campaigns/UTC-TIME; the same one with resume=true continues)",
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="the SuperLink state of `hearth-server up` (its FLWR_HOME)"),
    ] = None,
    poll: Annotated[float, typer.Option("--poll", min=0.1, help="seconds between polls")] = 2.0,
) -> None:
    """Submit a campaign (`flwr run`), follow it to its end, and exit non-zero if it did nothing.

    Prints each round's outcome as it ends: how many sampled devices trained, were
    unavailable, refused the bundle, declined the policy or sent protocol errors.
    Exits 0 when the run completed and aggregated at least one round, 2 when it
    aggregated nothing, 1 when the run failed or was stopped.
    """
    import os  # noqa: PLC0415 (only this command needs them)

    from server.campaign_run import CampaignRunError, Flwr, run_campaign  # noqa: PLC0415
    from server.report import round_outcome  # noqa: PLC0415
    from server.up import bin_dir, flwr_env  # noqa: PLC0415

    if state is not None or "FLWR_HOME" not in os.environ:
        link = LinkConfig(pki_dir=Path("pki"), state_dir=(state or server_home() / "superlink"))
        env = flwr_env(link)
    else:
        env = {**os.environ, "FLWR_DISABLE_UPDATE_CHECK": "1"}
    directory = checkpoint_dir or server_home() / "campaigns" / datetime.now(UTC).strftime(
        "%Y%m%dT%H%M%SZ"
    )
    directory = directory.resolve()

    def show(outcome: dict[str, object]) -> None:
        typer.echo(
            round_outcome(
                int(str(outcome["round"])),
                outcome,
                int(str(outcome.get("min_cohort", 0))),
                bool(outcome.get("aggregated")),
            )
        )

    typer.echo(f"checkpoints and round outcomes go to {directory}")
    try:
        ended = run_campaign(
            Flwr(bin_dir() / "flwr", env),
            app_dir.resolve(),
            run_config,
            directory,
            on_outcome=show,
            poll_seconds=poll,
        )
    except CampaignRunError as exc:
        raise _fail(str(exc)) from None
    typer.echo(ended.summary(), err=ended.exit_code != 0)
    raise typer.Exit(ended.exit_code)
