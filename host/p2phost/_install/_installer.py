"""Install, upgrade, remove and sync plugins: plan, fetch and verify, then switch atomically.

Every operation computes the *target* lock, makes sure each of its files is in the
download cache with the right sha256, unpacks them all into a new environment
generation aside, and only then switches. The three records change in an order that
keeps a working project at every instant, even under SIGKILL: when adding, the
environment switches first, then ``p2phost.lock``, then ``p2phost.toml`` (a declared
plugin is always installed); when removing, the reverse.
"""

from __future__ import annotations

import shutil
from collections.abc import Collection, Mapping
from pathlib import Path

from packaging.version import Version

from p2phost_sdk import normalize_name

from .._errors import UserError
from .._lock import Lock, LockedFile
from .._manifest import ManifestEditor
from .._project import Project
from .._suggest import close_names, did_you_mean
from ._builtin import BUILTIN_SOURCE
from ._cache import DownloadCache, ProgressFactory
from ._current import lock_satisfies
from ._errors import InstallError, IntegrityError, ResolutionError, UnknownPlugin
from ._health import (
    changed_hashes,
    edited_entry,
    lock_gaps,
    lost_files,
    requirement_gaps,
)
from ._http import Fetcher, NotFound
from ._official import builtin_signature, official_pin
from ._plan import Change, Plan, default_specifier
from ._projectlock import exclusive
from ._registry import RegistryClient, Release, RemoteFile
from ._resolver import Requirement, resolve, usable
from ._signing import (
    SigningPolicy,
    check_lock,
    check_pin,
    lock_signature_ok,
    verify_download,
)
from ._unpacked import link_wheel, unpacked
from ._wheels import check_sdk, python_requirements


class Installer:
    """The plugin lifecycle of one project."""

    def __init__(self, project: Project, registries: list[str], *,
                 cache: DownloadCache | None = None, fetcher: Fetcher | None = None,
                 progress: ProgressFactory | None = None,
                 signing: SigningPolicy | None = None, refresh: bool = False,
                 origin: str = "[registry] url in p2phost.toml") -> None:
        self.project = project
        #: The registries this run asks (an option or P2PHOST_REGISTRY, else the manifest's).
        self.registries = tuple(registries)
        self.signing = signing or SigningPolicy()
        #: Warnings for the user (unsigned plugins), in the order they arose.
        self.warnings: list[str] = []
        #: What ``sync`` removed of earlier installs killed while staging: (path, bytes).
        self.removed_leftovers: list[tuple[Path, int]] = []
        self.env = project.environment
        self.cache = cache or DownloadCache()
        self.fetcher = fetcher or Fetcher.from_env(self.cache.root, refresh=refresh)
        #: ``--refresh``: every registry must answer (no built-in fallback, no kept lock).
        self.strict = refresh
        self.origin = origin
        self.client = self._client()
        self.progress = progress
        self.lock = Lock.load(project.lock_path)
        #: The files the active generation was built from (``env.built_from()``), read
        #: once for planning, again once the install lock is held, and set by ``_commit``.
        self.built = self.env.built_from()
        #: Locked plugins whose entry cannot be reused as it is (a signature that does not
        #: verify, a file other than the one installed: an edited lock): fetched again.
        self.doubted = doubted(self.lock, self.built)
        #: Whether this run's decision rests on more than the kept registry answers and
        #: the project (pip's resolution, a file its registry replaced): then ``_record``
        #: keeps no replay of it.
        self.unrecordable = False
        #: What ``apply`` installed into the new generation, by name (the plan's changes
        #: leave out plugins the lock already had: a fresh clone's).
        self.rebuilt: list[Change] = []
        #: What ``apply`` only locked again, as (new entry, entry before or None): files the
        #: active generation was already built from, whose entry was missing or other
        #: (an edited lock). Nothing of them was installed.
        self.relocked: list[tuple[LockedFile, LockedFile | None]] = []

    # -- planning ---------------------------------------------------------------------

    def plan_install(self, requests: Mapping[str, str]) -> Plan:
        """Add or change ``requests`` (name -> specifier, "" = keep/any) on top of the manifest.

        With no requests and a lock that already satisfies the manifest, the lock is the
        plan: nothing is resolved and no registry is asked (see ``_current``), unless this
        run refreshes (``--refresh``) and registries are configured: then they are asked.
        """
        asks = self.strict and self.registries
        if not requests and not asks and not self.doubted \
                and lock_satisfies(self.project, self.lock, self.registries):
            return Plan(self.lock.plugins, ())
        declared = dict(self.project.manifest.plugins)
        wanted = dict(declared)
        for name, spec in requests.items():
            wanted[normalize_name(name)] = spec or declared.get(normalize_name(name), "*")
        preferred = {p.name: p.version for p in self.lock.plugins}
        plan = self._plan(wanted, preferred)
        chosen = {r.name: str(r.version) for r in plan.plugins if isinstance(r, Release)}
        declare = {}
        for name, spec in requests.items():
            norm = normalize_name(name)
            if spec or norm not in declared:
                declare[name] = spec or default_specifier(chosen[norm])
        return Plan(plan.plugins, plan.changes, declare=declare)

    def plan_upgrade(self, names: Collection[str], *, latest: bool = False) -> Plan:
        """Newest versions within the manifest's specifiers (of ``names``, or of all).

        With ``latest``, the newest releases that fit this host, whatever the specifiers
        say; the manifest then records each one's new range.
        """
        norms = {normalize_name(n) for n in names}
        installed = [p.name for p in self.lock.plugins]
        for norm in sorted(norms):
            if self.lock.plugin(norm) is None:
                close = close_names(norm, installed)
                raise UserError(f"plugin {norm!r} is not installed in this project"
                                + did_you_mean(norm, installed),
                                fix=f"p2phost plugin upgrade {close[0]}" if close
                                else f"p2phost plugin install {norm}")
        if latest:
            newest = {}
            for name in sorted(norms or set(self.project.manifest.plugins)):
                release = self.client.plugin(name).newest_fitting()
                if release is not None:
                    newest[name] = default_specifier(str(release.version))
            return self.plan_install(newest)
        preferred = {p.name: p.version for p in self.lock.plugins
                     if norms and p.name not in norms}
        return self._plan(dict(self.project.manifest.plugins), preferred)

    def refresh(self) -> None:
        """Revalidate every registry answer from now on (``--refresh``), asking again."""
        self.fetcher = self.fetcher.refreshing()
        self.client = self._client()

    def _client(self) -> RegistryClient:
        return RegistryClient(list(self.registries), self.fetcher, notify=self.warnings.append,
                              strict=self.strict, origin=self.origin)

    def _used_kept_answers(self) -> bool:
        """Whether this run used a kept registry answer without asking (while fresh)."""
        responses = self.fetcher.responses
        return not self.fetcher.refresh and responses is not None and responses.fresh_hits > 0

    def _asked_again(self, item: Release) -> tuple[Release, RemoteFile] | None:
        """``item`` and its wheel as its registry describes them now, when ``item`` may
        come from a kept answer (a file since replaced or removed); else None."""
        if item.source == BUILTIN_SOURCE or not self._used_kept_answers():
            return None
        self.unrecordable = True
        self.refresh()
        now = next((r for r in self.client.plugin(item.name).releases
                    if r.version == item.version and r.source == item.source), None)
        wheel = now.wheel() if now is not None else None
        return (now, wheel) if now is not None and wheel is not None else None

    def _plan(self, wanted: Mapping[str, str], preferred: Mapping[str, str]) -> Plan:
        reqs = [Requirement.parse(name, spec) for name, spec in wanted.items()]
        try:
            resolution = resolve(self.client, reqs, preferred)
        except (ResolutionError, UnknownPlugin):
            # Fresh kept answers may predate a release the request needs: a failure is
            # only reported once the registries have been asked again.
            if not self._used_kept_answers():
                raise
            self.refresh()
            resolution = resolve(self.client, reqs, preferred)
        old = {p.name: p.version for p in self.lock.plugins}
        changes = [Change(r.name, old.get(r.name), str(r.version), r, resolution.infos[r.name])
                   for r in resolution.releases if old.get(r.name) != str(r.version)]
        chosen = {r.name for r in resolution.releases}
        changes += [Change(name, version, None) for name, version in old.items()
                    if name not in chosen]
        return Plan(resolution.releases, tuple(changes))

    def plan_remove(self, names: Collection[str], *, force: bool = False) -> Plan:
        """Drop ``names``; refused while another kept plugin requires one, unless ``force``."""
        declared = self.project.manifest.plugins
        gone = {normalize_name(n) for n in names}
        for name in sorted(gone):
            if name not in declared and self.lock.plugin(name) is None:
                close = close_names(name, declared)
                raise UserError(f"plugin {name!r} is not declared in p2phost.toml"
                                + did_you_mean(name, declared),
                                fix=f"p2phost plugin remove {close[0]}" if close
                                else "p2phost plugin list")
        keep = self._closure([n for n in declared if n not in gone], skip=gone if force else set())
        if not force:
            for name in sorted(keep & gone):
                users = [p for p in self.lock.plugins if p.name in keep and name in p.requires]
                who = ", ".join(f"{p.name} {p.version}" for p in users) or "a declared plugin"
                raise UserError(f"cannot remove {name}: {who} requires it",
                                fix=f"remove {', '.join(p.name for p in users)} first, or "
                                    f"p2phost plugin remove --force {name}")
        kept = tuple(p for p in self.lock.plugins if p.name in keep)
        changes = tuple(Change(p.name, p.version, None) for p in self.lock.plugins
                        if p.name not in keep)
        return Plan(kept, changes, undeclare=tuple(sorted(gone)))

    def _closure(self, roots: list[str], skip: Collection[str]) -> set[str]:
        """The locked plugins ``roots`` need, following ``requires``, never entering ``skip``."""
        seen: set[str] = set()
        stack = [r for r in roots if r not in skip]
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            locked = self.lock.plugin(name)
            stack.extend(r for r in (locked.requires if locked else ()) if r not in skip)
        return seen

    def outdated(self) -> list[tuple[str, str, str, str]]:
        """(name, installed, newest within the manifest's specifier, newest) per plugin."""
        rows = []
        for locked in self.lock.plugins:
            info = self.client.plugin(locked.name)
            spec = self.project.manifest.plugins.get(locked.name, "*")
            within = next((r for r in info.releases
                           if usable(r, [Requirement.parse(locked.name, spec)])), None)
            newest = info.newest_fitting()
            wanted = str(within.version) if within else locked.version
            latest = str(newest.version) if newest else locked.version
            if Version(locked.version) < max(Version(wanted), Version(latest)):
                rows.append((locked.name, locked.version, wanted, latest))
        return rows

    # -- applying ---------------------------------------------------------------------

    def apply(self, plan: Plan) -> Lock:
        """Fetch, verify, stage and switch to ``plan``; then record it. Returns the new lock."""
        with exclusive(self.project):
            self.built = self.env.built_from()  # another install may have run since
            lock = self._target_lock(plan)
            adding = not plan.undeclare
            if adding:
                check_lock(lock, self.signing, self.warnings.append,
                           frozenset(c.name for c in plan.changes if c.new))
            self.rebuilt = self._drift(lock)
            self.relocked = self._relocked(lock)  # before _commit records the new build
            if lock == self.lock and not self.rebuilt:
                self._edit_manifest(plan)  # e.g. a new specifier the same version satisfies
                return lock
            staged = self._stage(lock, offline=False)
            if not adding:
                self._edit_manifest(plan)
                lock.save(self.project.lock_path)
            self._commit(staged, lock)
            if adding:
                lock.save(self.project.lock_path)
                self._edit_manifest(plan)
            self.lock = lock
            return lock

    def already_installed(self, change: Change) -> bool:
        """Whether ``change`` adds to the lock the very file the active generation was
        built from (its entry was deleted from ``p2phost.lock``): only a lock entry to
        write again, nothing to install."""
        wheel = change.release.wheel() if change.release is not None else None
        return change.old is None and wheel is not None \
            and (self.built or {}).get(change.name) == wheel.sha256

    def _relocked(self, lock: Lock) -> list[tuple[LockedFile, LockedFile | None]]:
        """Entries of ``lock`` that differ from the current lock's (or that it lacks) for a
        file the active generation was built from and keeps (see ``relocked``)."""
        built = self.built or {}
        before = {f.name: f for f in self.lock.files}
        rebuilt = {c.name for c in self.rebuilt}
        return [(entry, before.get(entry.name)) for entry in lock.files
                if built.get(entry.name) == entry.sha256 and entry.name not in rebuilt
                and before.get(entry.name) != entry]

    def sync(self, *, offline: bool = False) -> list[Change]:
        """Make the environment hold exactly what ``p2phost.lock`` says."""
        if not self.project.lock_path.exists():
            raise UserError(f"no {self.project.lock_path.name} in {self.project.root}",
                            fix="p2phost plugin install (resolves and writes it)")
        with exclusive(self.project):
            lock = Lock.load(self.project.lock_path)
            self.built = self.env.built_from()  # as the lock: read once it is held
            relocked = False
            edited = {entry.name for entry, _ in changed_hashes(lock, self.built)
                      if lock.plugin(entry.name) is None}
            if edited:  # a package entry edited by hand: resolved again below, not fetched
                lock = Lock(plugins=lock.plugins, extra=lock.extra,
                            packages=tuple(p for p in lock.packages if p.name not in edited))
            if lock_gaps(lock):  # a plugin's own requirement is not in the lock
                lock, relocked = self._relock(lock, offline), True
            changes = self._drift(lock)
            check_lock(lock, self.signing, self.warnings.append,
                       frozenset(c.name for c in changes if c.new))
            if changes:
                self._commit(self._stage(lock, offline=offline), lock)
            if requirement_gaps(self.env.installed()):  # ... nor one of theirs
                lock, relocked = self._relock(lock, offline), True
                more = self._drift(lock)
                if more:
                    self._commit(self._stage(lock, offline=offline), lock)
                changes += [c for c in more if c.name not in {d.name for d in changes}]
            if relocked:
                lock.save(self.project.lock_path)
                self.lock = lock
            self.removed_leftovers = self.env.collect_garbage()
            return changes

    def _relock(self, lock: Lock, offline: bool) -> Lock:
        """``lock`` with its Python packages resolved again from the plugins' requirements."""
        if offline:
            gaps = lock_gaps(lock) or requirement_gaps(self.env.installed())
            raise UserError(f"{', '.join(g.name for g in gaps)}: needed by the plugins but "
                            "not in p2phost.lock, and --offline cannot resolve them",
                            fix="p2phost plugin sync (without --offline)")
        from ._pydeps import resolve_packages  # runs pip: only plugins with requirements

        needs = sorted({d for p in lock.plugins for d in p.dependencies})
        return Lock(plugins=lock.plugins, packages=resolve_packages(needs), extra=lock.extra)

    def _drift(self, lock: Lock) -> list[Change]:
        """How the installed distributions differ from ``lock`` (empty: they match).

        A distribution that lost files, or was installed from another file than the
        locked one, counts as missing, so it is installed again.
        """
        installed = self.env.installed()
        other = {entry.name for entry, _ in changed_hashes(lock, self.built)}
        have = {n: d.version for n, d in installed.items()
                if n not in other and not lost_files(d)}
        want = {f.name: f.version for f in lock.files}
        return [Change(n, have.get(n), want.get(n)) for n in sorted({*have, *want, *installed})
                if have.get(n) != want.get(n)]

    def _target_lock(self, plan: Plan) -> Lock:
        plugins = []
        for item in plan.plugins:
            locked = item if isinstance(item, LockedFile) else self.lock.plugin(item.name)
            if locked is not None and locked.name not in self.doubted and (
                    isinstance(item, LockedFile) or _same_file(locked, item)):
                plugins.append(locked)
                continue
            assert isinstance(item, Release)
            wheel = item.wheel()
            assert wheel is not None  # the resolver only picks releases with a fitting wheel
            builtin = item.source == BUILTIN_SOURCE  # its file:// URL is this machine's only
            try:
                path = self._download(wheel, builtin)
            except (IntegrityError, NotFound):
                if (renewed := self._asked_again(item)) is None:
                    raise
                item, wheel = renewed  # the registry changed the file since its kept answer
                path = self._download(wheel, builtin)
            signed = builtin_signature(self.client, self.fetcher, item, wheel) if builtin \
                else verify_download(item, wheel, self.fetcher, path.with_name(path.name + ".sig"))
            check_pin(item, signed, locked or official_pin(self.client, item), self.signing)
            tree = unpacked(self.cache.root, wheel.sha256, path)  # staging links its files
            check_sdk(item.name, str(item.version), tree)
            plugins.append(LockedFile(
                name=item.name, version=str(item.version), source=item.source,
                filename=wheel.filename, sha256=wheel.sha256,
                requires=tuple(sorted(item.requires)), url=None if builtin else wheel.url,
                dependencies=python_requirements(tree),
                signature=signed.signature if signed else None,
                publisher_key=signed.publisher_key if signed else None))
        needs = sorted({d for p in plugins for d in p.dependencies})
        before = sorted({d for p in self.lock.plugins for d in p.dependencies})
        kept = Lock(plugins=tuple(plugins), packages=self.lock.packages)
        if needs == before and not lock_gaps(kept):
            return kept
        from ._pydeps import resolve_packages

        self.unrecordable = True  # pip asked its index
        return Lock(plugins=tuple(plugins), packages=resolve_packages(needs))

    def _download(self, wheel: RemoteFile, builtin: bool) -> Path:
        return self.cache.fetch(wheel.url, wheel.sha256, wheel.filename, self.fetcher,
                                None if builtin else self.progress, wheel.size)

    def _file(self, entry: LockedFile, offline: bool) -> Path:
        hit = self.cache.get(entry.sha256, entry.filename)
        if hit is not None:
            return hit
        # The built-in source may ship the file a registry was locked for (and that
        # registry may be down): the sha256 check takes only the very file.
        builtin = self.client.builtin
        local = builtin.file(entry.filename) if builtin is not None else None
        if local is not None:  # the sha256 check refuses a different file of the same name
            return self.cache.fetch(local.as_uri(), entry.sha256, entry.filename, self.fetcher)
        if entry.source == BUILTIN_SOURCE:
            raise UserError(f"{entry.filename} ({entry.name} {entry.version}) came from the "
                            "built-in source of another p2phost, and is neither in this one "
                            f"nor in the download cache {self.cache.root}",
                            fix=f"p2phost plugin upgrade {entry.name} (locks a version this "
                                "p2phost or a registry has)")
        if offline or not entry.url:
            raise UserError(f"{entry.filename} ({entry.name} {entry.version}) is not in the "
                            f"download cache {self.cache.root}",
                            fix="run `p2phost plugin sync` once while the registry is reachable")
        return self.cache.fetch(entry.url, entry.sha256, entry.filename, self.fetcher,
                                self.progress)

    def _locked_file(self, lock: Lock, entry: LockedFile, offline: bool) -> Path:
        """``_file``; when its source serves another file than ``entry`` names, ``entry``
        is the current lock's own, and the active generation was built from yet another
        file, what is wrong is the lock (an entry edited by hand), not the download: said
        as ``doctor`` says it, with its fix. An entry the plan changed (an upgrade) names
        the hash its source published: a file that fails it is a bad download."""
        try:
            return self._file(entry, offline)
        except IntegrityError as exc:
            installed = (self.built or {}).get(entry.name)
            locked = next((f for f in self.lock.files if f.name == entry.name), None)
            if installed is None or installed == entry.sha256 or locked is None \
                    or (locked.version, locked.sha256) != (entry.version, entry.sha256):
                raise
            gap = edited_entry(lock, entry, installed)
            raise UserError(gap.message, fix=gap.fix) from exc

    def _stage(self, lock: Lock, *, offline: bool) -> Path:
        """A new generation holding exactly ``lock``'s files, not yet active."""
        wheels = [(entry.sha256, self._locked_file(lock, entry, offline))
                  for entry in lock.files]
        staged: Path | None = None
        try:
            staged = self.env.stage()
            for sha256, wheel in wheels:
                link_wheel(self.cache.root, sha256, wheel, staged)
            return staged
        except BaseException as exc:
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)
            if isinstance(exc, OSError):
                raise InstallError(f"cannot write the plugin environment {self.env.root}: "
                                   f"{exc.strerror or exc}; nothing was changed",
                                   fix="free disk space or fix the directory's permissions, "
                                       "then retry") from exc
            raise

    def _commit(self, staged: Path, lock: Lock) -> None:
        try:
            self.env.commit(staged)
            self.built = {f.name: f.sha256 for f in lock.files}
            self.env.remember(self.built)
        except OSError as exc:
            shutil.rmtree(staged, ignore_errors=True)
            raise InstallError(f"cannot switch the plugin environment {self.env.root}: "
                               f"{exc.strerror or exc}; the previous plugins are still active",
                               fix="fix the directory's permissions, then retry") from exc

    def _edit_manifest(self, plan: Plan) -> None:
        if not plan.declare and not plan.undeclare:
            return
        editor = ManifestEditor(self.project.manifest_path)
        for name, spec in plan.declare.items():
            editor.set_plugin(name, spec)
        for name in plan.undeclare:
            editor.remove_plugin(name)
        editor.save()


def doubted(lock: Lock, built: Mapping[str, str] | None) -> frozenset[str]:
    """Locked plugins whose signature does not verify with their pinned key, or whose file
    is not the one the active generation (built from ``built``) was built from."""
    bad = {p.name for p in lock.plugins if p.signature and not lock_signature_ok(p)}
    return frozenset(bad | {entry.name for entry, _ in changed_hashes(lock, built)})


def _same_file(locked: LockedFile, release: Release) -> bool:
    """Whether ``locked`` may stand for ``release``: the same version from the same source,
    or the very file the lock names, from the built-in source (its registry is down: the
    lock keeps naming that registry, so ``sync`` still fetches from it)."""
    if locked.version != str(release.version):
        return False
    if locked.source == release.source:
        return True
    wheel = release.wheel() if release.source == BUILTIN_SOURCE else None
    return wheel is not None and wheel.sha256 == locked.sha256
