// Builds the container image from deploy/Dockerfile as shipped, offline and without a daemon, for each
// architecture named (amd64, arm64; default amd64): `node scripts/build-image.mjs [amd64] [arm64]` (root; `npm
// run build` and `npm run build:arm64` first). Writes dist/portmap-hostip-image-<arch>.tar, an OCI archive of
// docker.io/library/portmap-hostip:<version> (what the DaemonSet's `portmap-hostip:<version>` names) that
// `ctr images import` takes.
//
// - The base, debian:12-slim, is made from Debian's mirror with mmdebstrap (minbase, merged /usr, slim's dpkg
//   excludes and apt settings from scripts/image-base/) and cached in .cache/image-base/.
// - Debian's buildah builds the Dockerfile (`--isolation chroot`, vfs storage under a temporary directory that
//   is removed afterwards), inside a private mount namespace (scripts/image-ns.sh).
// - arm64: mmdebstrap and the Dockerfile's `RUN apt-get` run arm64 programs. They run under qemu-user through a
//   binfmt_misc instance private to a user namespace (Linux ≥ 6.7), so the machine's own binfmt_misc stays
//   untouched; the user namespace maps IDs 0–65535 to themselves (apt drops to _apt).
// - Each image is checked: its architecture, and its /portmap-hostip byte for byte the executable of dist/.
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "..");
const { version } = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
/** The name containerd gives the manifest's `image: portmap-hostip:<version>`. */
const IMAGE = `docker.io/library/portmap-hostip:${version}`;
const BASE_IMAGE = "docker.io/library/debian:12-slim";
const EXECUTABLES = { amd64: "dist/portmap-hostip-linux-x64", arm64: "dist/portmap-hostip-linux-arm64" };
const BASE_DIR = join(ROOT, ".cache/image-base");
const NS_HELPER = join(ROOT, "scripts/image-ns.sh");
const SLIM_APT = ["docker-clean", "docker-gzip-indexes", "docker-no-languages", "docker-autoremove-suggests"].map(
  (f) => `scripts/image-base/${f}`,
);
const DPKG_EXCLUDES = readFileSync(join(ROOT, "scripts/image-base/dpkg-excludes"), "utf8")
  .split("\n")
  .filter((line) => line.startsWith("path-"));
// IDs the user namespace maps to themselves: Debian's system users and nobody (65534).
const MAPPED_IDS = 65536;
const MINUTE = 60_000;

const arches = process.argv.slice(2);
if (arches.length === 0) arches.push("amd64");
for (const arch of arches) if (!(arch in EXECUTABLES)) throw new Error(`unknown architecture ${arch}: amd64 or arm64`);
if (process.getuid?.() !== 0) throw new Error("building the image needs root (mmdebstrap, buildah, namespaces)");

/** The arguments of mmdebstrap for `arch`, writing `out`; also the base's cache key. */
function mmdebstrapArgs(arch, out) {
  return [
    "--variant=minbase",
    "--mode=root",
    `--architectures=${arch}`,
    // Device nodes are the runtime's business (and cannot be made in a user namespace).
    "--skip=output/dev",
    // bookworm's layout without the usrmerge package (which pulls in perl).
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    // One option per line: mmdebstrap applies them while it extracts the essential packages only in this form.
    ...DPKG_EXCLUDES.map((line) => `--dpkgopt=${line.replace(" ", "=")}`),
    `--customize-hook=copy-in ${SLIM_APT.join(" ")} /etc/apt/apt.conf.d`,
    // mmdebstrap's own clean-up leaves apt's binary caches (74 MB).
    '--customize-hook=rm -f "$1"/var/cache/apt/*.bin',
    "bookworm",
    out,
    "http://deb.debian.org/debian",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
  ];
}

/**
 * Runs `cmd args` (cwd: the repository) inside the namespaces of scripts/image-ns.sh, its output appended to
 * `log`; `emulate`: in a user namespace whose binfmt_misc runs arm64 programs under qemu.
 */
function inNamespaces(work, log, { emulate = false, privateVar = false }, cmd, args, timeoutMs) {
  const flags = [...(emulate ? ["--userns", "--emulate-arm64"] : []), ...(privateVar ? ["--private-var"] : [])];
  const unshare = ["--mount", ...(emulate ? ["--user"] : []), "--propagation", "private"];
  const line = [cmd, ...args].join(" ");
  writeFileSync(log, `\n$ ${line}\n`, { flag: "a" });
  return new Promise((done, fail) => {
    const logStart = readFileSync(log, "utf8").length;
    const child = spawn("unshare", [...unshare, "bash", NS_HELPER, work, ...flags, "--", cmd, ...args], {
      cwd: ROOT,
      detached: true,
      env: { ...process.env, CONTAINERS_CONF: join(work, "containers.conf"), TMPDIR: join(work, "tmp") },
      stdio: [emulate ? "pipe" : "ignore", "pipe", "pipe"],
    });
    let stdout = "";
    child.stdout.on("data", (d) => {
      stdout += d;
      writeFileSync(log, d, { flag: "a" });
    });
    child.stderr.on("data", (d) => writeFileSync(log, d, { flag: "a" }));
    // SIGKILL to the whole group: buildah's and mmdebstrap's children too.
    const timer = setTimeout(() => process.kill(-child.pid, "SIGKILL"), timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      fail(e);
    });
    const began = Date.now();
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      writeFileSync(log, `# ${line.split(" ")[0]}: ${((Date.now() - began) / 1000).toFixed(1)} s\n`, { flag: "a" });
      if (code === 0) return done(stdout.trim());
      const tail = readFileSync(log, "utf8").slice(logStart).split("\n").slice(-30).join("\n");
      const why = signal === "SIGKILL" ? `killed after ${timeoutMs / 1000} s` : `exited ${code ?? signal}`;
      fail(new Error(`${line} ${why} (log: ${log}):\n${tail}`));
    });
    if (emulate)
      mapIds(child).catch((e) => {
        process.kill(-child.pid, "SIGKILL");
        fail(e);
      });
  });
}

/** Maps IDs 0–65535 of the child's new user namespace to themselves, then lets image-ns.sh go on. */
async function mapIds(child) {
  const own = readlinkSync("/proc/self/ns/user");
  // unshare execs image-ns.sh in the same process: wait until it is in its new user namespace.
  for (let i = 0; readlinkSync(`/proc/${child.pid}/ns/user`) === own; i++) {
    if (i === 100) throw new Error("unshare did not enter a new user namespace within 5 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  writeFileSync(`/proc/${child.pid}/uid_map`, `0 0 ${MAPPED_IDS}\n`);
  writeFileSync(`/proc/${child.pid}/gid_map`, `0 0 ${MAPPED_IDS}\n`);
  child.stdin.end("go\n");
}

/** The cached base rootfs tarball of `arch`, made first when missing. */
async function baseTarball(arch, work, log) {
  const key = createHash("sha256").update(JSON.stringify(mmdebstrapArgs(arch, "")));
  for (const f of SLIM_APT) key.update(readFileSync(join(ROOT, f)));
  const name = `debian-12-slim-${arch}-${key.digest("hex").slice(0, 12)}.tar`;
  const file = join(BASE_DIR, name);
  if (existsSync(file)) return file;
  mkdirSync(BASE_DIR, { recursive: true });
  // Older bases of this architecture (another configuration) go.
  for (const old of readdirSync(BASE_DIR)) if (old.startsWith(`debian-12-slim-${arch}-`)) rmSync(join(BASE_DIR, old));
  const tmp = join(work, name);
  await inNamespaces(work, log, { emulate: arch === "arm64" }, "mmdebstrap", mmdebstrapArgs(arch, tmp), 15 * MINUTE);
  renameSync(tmp, file);
  return file;
}

/** Checks that the archive is an image of `arch` whose /portmap-hostip is `executable`. */
function verify(archive, arch, executable, work) {
  const dir = join(work, "verify");
  mkdirSync(dir);
  execFileSync("tar", ["-xf", archive, "-C", dir], { timeout: 5 * MINUTE });
  const blob = (digest) => join(dir, "blobs", digest.replace(":", "/"));
  const json = (digest) => JSON.parse(readFileSync(blob(digest), "utf8"));
  const [entry] = JSON.parse(readFileSync(join(dir, "index.json"), "utf8")).manifests;
  if (entry?.annotations?.["org.opencontainers.image.ref.name"] !== IMAGE)
    throw new Error(`${archive} is not ${IMAGE}`);
  const manifest = json(entry.digest);
  const config = json(manifest.config.digest);
  if (config.architecture !== arch) throw new Error(`${archive}: architecture ${config.architecture}, not ${arch}`);
  const top = blob(manifest.layers.at(-1).digest);
  execFileSync("tar", ["-xzf", top, "-C", dir, "portmap-hostip"], { timeout: 5 * MINUTE });
  const sha = (f) => createHash("sha256").update(readFileSync(f)).digest("hex");
  if (sha(join(dir, "portmap-hostip")) !== sha(join(ROOT, executable)))
    throw new Error(`${archive}: /portmap-hostip is not ${executable}`);
}

async function buildImage(arch) {
  const executable = EXECUTABLES[arch];
  if (!existsSync(join(ROOT, executable)))
    throw new Error(`${executable} is missing: npm run build${arch === "arm64" ? ":arm64" : ""} first`);
  const work = mkdtempSync("/tmp/pmh-image-");
  const archive = join(ROOT, `dist/portmap-hostip-image-${arch}.tar`);
  const partial = `${archive}.partial`;
  const log = join(ROOT, `dist/portmap-hostip-image-${arch}.log`);
  writeFileSync(log, "");
  try {
    mkdirSync(join(work, "tmp"));
    // buildah's network setup would create /etc/cni/net.d on the machine; chroot isolation needs none.
    writeFileSync(
      join(work, "containers.conf"),
      `[network]\nnetwork_config_dir = ${JSON.stringify(join(work, "cni"))}\n`,
    );
    const started = Date.now();
    const base = await baseTarball(arch, work, log);
    const opts = { emulate: arch === "arm64", privateVar: true };
    const storage = ["--root", join(work, "root"), "--runroot", join(work, "runroot"), "--storage-driver", "vfs"];
    const buildah = (args, timeoutMs = 5 * MINUTE) =>
      inNamespaces(work, log, opts, "buildah", [...storage, ...args], timeoutMs);
    // The base as the image the Dockerfile names, with debian:12-slim's configuration.
    const container = await buildah(["from", "scratch"]);
    await buildah(["add", container, base, "/"]);
    await buildah([
      ...["config", "--arch", arch, "--os", "linux", "--cmd", "bash"],
      ...["--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", container],
    ]);
    await buildah(["commit", "--rm", "--quiet", container, BASE_IMAGE]);
    await buildah(
      [
        ...["bud", "--isolation", "chroot", "--pull-never", "--platform", `linux/${arch}`],
        ...["--file", "deploy/Dockerfile", "--tag", IMAGE, "."],
      ],
      15 * MINUTE,
    );
    rmSync(archive, { force: true });
    await buildah(["push", "--quiet", IMAGE, `oci-archive:${partial}:${IMAGE}`]);
    verify(partial, arch, executable, work);
    renameSync(partial, archive);
    console.log(`${archive}: ${IMAGE} for ${arch} (${Math.round((Date.now() - started) / 1000)} s)`);
  } finally {
    rmSync(partial, { force: true });
    rmSync(work, { recursive: true, force: true });
  }
}

// Side by side: the arm64 build is mostly emulated CPU, the amd64 one mostly downloads and copies.
// Each build removes what it made, also when the other fails.
const failures = (await Promise.allSettled(arches.map(buildImage))).filter((r) => r.status === "rejected");
if (failures.length > 0)
  throw new AggregateError(
    failures.map((r) => r.reason),
    "building the image failed",
  );
