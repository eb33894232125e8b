// The in-cluster API client: found only with KUBERNETES_SERVICE_HOST and a mounted token; over HTTPS trusting
// the mounted CA, the token read again at every call; an API server that does not answer is an error naming the
// call and the limit. The server here is a local HTTPS server (a certificate made with openssl) answering what
// a real API server answered (test/fixtures/kube/).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inCluster } from "../../../src/host/kube.js";
import { runOk } from "../../support/exec.js";

const created = JSON.parse(
  readFileSync(join(import.meta.dirname, "../../fixtures/kube/post-event-created.json"), "utf8"),
) as { status: number; body: unknown };

let dir: string;
let server: Server;
let port: number;
const seen: Array<{ method?: string; url?: string; authorization?: string; body: string }> = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "pmh-kube-"));
  await runOk("openssl", [
    ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"],
    ...["-keyout", join(dir, "key.pem"), "-out", join(dir, "ca.crt"), "-subj", "/CN=pmh-test"],
    ...["-addext", "subjectAltName=IP:127.0.0.1"],
  ]);
  server = createServer(
    { key: readFileSync(join(dir, "key.pem")), cert: readFileSync(join(dir, "ca.crt")) },
    (req, res) => {
      let body = "";
      req.on("data", (d: Buffer) => (body += d.toString()));
      req.on("end", () => {
        seen.push({ method: req.method, url: req.url, authorization: req.headers.authorization, body });
        // A call to /hang is never answered.
        if (req.url === "/hang") return;
        res.writeHead(created.status, { "Content-Type": "application/json" }).end(JSON.stringify(created.body));
      });
    },
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

const env = () => ({ KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: String(port) });

describe("inCluster", () => {
  it("is none outside a cluster, or without a mounted token", async () => {
    expect(await inCluster({}, dir)).toBeUndefined();
    expect(await inCluster(env(), dir)).toBeUndefined();
  });

  it("calls the API server over HTTPS with the mounted CA and the token as it is at each call", async () => {
    writeFileSync(join(dir, "token"), "first-token\n");
    const kube = (await inCluster(env(), dir))!;
    const answer = await kube.call("POST", "/api/v1/namespaces/default/events", { reason: "HostPortRepaired" });
    expect(answer).toEqual(created);
    writeFileSync(join(dir, "token"), "rotated-token\n");
    await kube.call("GET", "/api/v1/namespaces/default/pods/web");
    expect(seen.slice(-2)).toEqual([
      {
        method: "POST",
        url: "/api/v1/namespaces/default/events",
        authorization: "Bearer first-token",
        body: '{"reason":"HostPortRepaired"}',
      },
      { method: "GET", url: "/api/v1/namespaces/default/pods/web", authorization: "Bearer rotated-token", body: "" },
    ]);
  });

  it("gives up on an API server that does not answer, naming the call and the limit", async () => {
    writeFileSync(join(dir, "token"), "t\n");
    const kube = (await inCluster(env(), dir, 300))!;
    await expect(kube.call("GET", "/hang")).rejects.toThrow("GET /hang: no answer from the API server within 300 ms");
  });

  it("refuses a server its CA did not sign, and a bad port", async () => {
    writeFileSync(join(dir, "token"), "t\n");
    const other = mkdtempSync(join(tmpdir(), "pmh-kube-other-"));
    try {
      await runOk("openssl", [
        ...["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"],
        ...["-keyout", join(other, "key.pem"), "-out", join(other, "ca.crt"), "-subj", "/CN=other"],
      ]);
      writeFileSync(join(other, "token"), "t\n");
      const kube = (await inCluster(env(), other))!;
      await expect(kube.call("GET", "/x")).rejects.toThrow(/^GET \/x: .*(self.signed|certificate)/i);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
    await expect(inCluster({ ...env(), KUBERNETES_SERVICE_PORT: "https" }, dir)).rejects.toThrow(
      'KUBERNETES_SERVICE_PORT "https" is not a port',
    );
  });
});
