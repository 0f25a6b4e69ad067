// An OpenID Connect relying party built on panva's certified `openid-client`, so that the
// end-to-end test proves the CA's OpenID Connect provider interoperates with a real client
// library rather than with our own reading of the specification. It is a confidential
// client using the authorization code flow with PKCE (S256), state and nonce.
//
// Usage: node oidc-rp.mjs [--port N]
// Listens on 127.0.0.1 (port 0, i.e. any free port, unless --port is given) and prints one
// JSON line on stdout once listening: {"url":"http://127.0.0.1:PORT"}. Logs go to stderr.
// Exits 0 on SIGTERM/SIGINT, 2 on bad usage.
//
//   POST /configure  {"issuer", "clientId", "clientSecret", "caBundlePem", "auth": "basic"|"post"}
//                    runs discovery, trusting only caBundlePem for TLS (loopback callers only);
//                    200 {"configured":true}, 400 on a bad body, 502 {"error"} when discovery fails.
//   GET /login[?login_hint=U][&redirect_uri=OTHER]
//                    302 to the authorization endpoint (redirect_uri defaults to <url>/callback;
//                    OTHER is passed through as given, for negative tests); 409 before /configure.
//   GET /callback    hands the answer to openid-client, which checks state and iss: an
//                    `error` answer renders 200 <h1>Refused</h1> with #error[data-error];
//                    otherwise it redeems the code, fetches userinfo and renders <h1>Signed in</h1>
//                    with #device[data-udid][data-serial-number][data-certificate-serial], #sub,
//                    #claims, #userinfo and #id-token; any failure renders 500 <h1>Failed</h1>
//                    with #failure[data-code].
import http from "node:http";
import https from "node:https";
import * as client from "openid-client";

const args = process.argv.slice(2);
let port = 0;
if (args.length === 2 && args[0] === "--port" && /^\d+$/.test(args[1])) port = Number(args[1]);
else if (args.length !== 0) {
  console.error("usage: node oidc-rp.mjs [--port N]");
  process.exit(2);
}

const TIMEOUT_MS = 10_000;
const MAX_PENDING = 100;
let ownUrl; // http://127.0.0.1:PORT, known once listening
let config; // the openid-client Configuration, set by /configure
const pending = new Map(); // state -> { codeVerifier, nonce }, oldest first

// A fetch for openid-client over node:https that trusts the given private root, since
// Node's global fetch cannot be given a CA at runtime. It never follows redirects.
function httpsFetch(caBundlePem) {
  return async (url, { method = "GET", headers = {}, body, signal } = {}) => {
    const payload = body == null ? null : Buffer.from(await new Response(body).arrayBuffer());
    signal?.throwIfAborted();
    return new Promise((resolve, reject) => {
      const req = https.request(url, {
        method,
        headers: payload ? { ...headers, "content-length": payload.length } : headers,
        ca: caBundlePem,
      });
      const onAbort = () => req.destroy(signal.reason);
      const timer = setTimeout(
        () => req.destroy(new DOMException(`${method} ${url} timed out`, "TimeoutError")),
        TIMEOUT_MS,
      );
      const done = () => { clearTimeout(timer); signal?.removeEventListener("abort", onAbort); };
      signal?.addEventListener("abort", onAbort, { once: true });
      req.on("error", (error) => { done(); reject(error); });
      req.on("response", (res) => {
        const chunks = [];
        res.on("data", (chunk) => chunks.push(chunk));
        res.on("error", (error) => { done(); reject(error); });
        res.on("end", () => {
          done();
          const responseHeaders = new Headers();
          for (let i = 0; i < res.rawHeaders.length; i += 2) {
            responseHeaders.append(res.rawHeaders[i], res.rawHeaders[i + 1]);
          }
          const nullBody = [204, 205, 304].includes(res.statusCode);
          resolve(new Response(nullBody ? null : Buffer.concat(chunks), {
            status: res.statusCode,
            statusText: res.statusMessage,
            headers: responseHeaders,
          }));
        });
      });
      req.end(payload ?? undefined);
    });
  };
}

const html = (value) => String(value ?? "").replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const page = (title, body) =>
  `<!doctype html><html><head><title>${html(title)}</title></head><body>${body}</body></html>`;
const failurePage = (code, message) =>
  page("Failed", `<h1>Failed</h1><p id="failure" data-code="${html(code)}">${html(message)}</p>`);

// The library's message, then the OAuth error and description or the underlying cause.
function describe(error) {
  const cause = error.cause instanceof Error ? error.cause.message : undefined;
  return [error.message, error.error ?? error.cause?.error,
    error.error_description ?? error.cause?.error_description, cause].filter(Boolean).join(": ");
}

function send(res, status, contentType, body, extra = {}) {
  res.writeHead(status, { "content-type": contentType, "cache-control": "no-store", ...extra });
  res.end(body);
}
const sendJson = (res, status, value) => send(res, status, "application/json", JSON.stringify(value));
const sendHtml = (res, status, html) => send(res, status, "text/html; charset=utf-8", html);

async function readJson(req) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    if ((size += chunk.length) > 1 << 20) throw new Error("body too large");
    chunks.push(chunk);
  }
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

async function configure(req, res) {
  if (!["127.0.0.1", "::ffff:127.0.0.1"].includes(req.socket.remoteAddress)) {
    return sendJson(res, 403, { error: "configure is only accepted from 127.0.0.1" });
  }
  let body;
  try {
    body = await readJson(req);
    if (typeof body?.issuer !== "string" || typeof body.clientId !== "string" ||
        typeof body.clientSecret !== "string" || !["basic", "post", undefined].includes(body.auth)) {
      throw new Error("expected {issuer, clientId, clientSecret, caBundlePem, auth: basic|post}");
    }
  } catch (error) {
    return sendJson(res, 400, { error: error.message });
  }
  const auth = body.auth === "post" ? client.ClientSecretPost : client.ClientSecretBasic;
  try {
    config = undefined;
    pending.clear();
    // Passed to discovery, the custom fetch is also stored on the Configuration
    // (config[client.customFetch]) and used for the token, userinfo and JWKS requests.
    // enableNonRepudiationChecks makes the library verify the ID token's signature against
    // the jwks_uri too (by default it trusts TLS for a token fetched from the token endpoint).
    config = await client.discovery(new URL(body.issuer), body.clientId, undefined,
      auth(body.clientSecret), {
        [client.customFetch]: httpsFetch(body.caBundlePem),
        timeout: 10,
        execute: [client.enableNonRepudiationChecks],
      });
    console.error(`oidc-rp: configured for ${config.serverMetadata().issuer}`);
    sendJson(res, 200, { configured: true });
  } catch (error) {
    console.error(`oidc-rp: discovery failed: ${error.code ?? error.name}: ${describe(error)}`);
    sendJson(res, 502, { error: describe(error) });
  }
}

async function login(url, res) {
  if (!config) return sendHtml(res, 409, failurePage("NOT_CONFIGURED", "POST /configure first"));
  const codeVerifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  pending.set(state, { codeVerifier, nonce });
  while (pending.size > MAX_PENDING) pending.delete(pending.keys().next().value);
  const parameters = {
    redirect_uri: url.searchParams.get("redirect_uri") ?? `${ownUrl}/callback`,
    scope: "openid",
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: "S256",
    state,
    nonce,
  };
  const loginHint = url.searchParams.get("login_hint");
  if (loginHint !== null) parameters.login_hint = loginHint;
  res.writeHead(302, { location: client.buildAuthorizationUrl(config, parameters).href, "cache-control": "no-store" });
  res.end();
}

async function callback(url, res) {
  const state = url.searchParams.get("state");
  const checks = pending.get(state);
  pending.delete(state);
  try {
    if (!config) throw Object.assign(new Error("POST /configure first"), { code: "NOT_CONFIGURED" });
    if (!checks) throw Object.assign(new Error("unknown or already used state"), { code: "UNKNOWN_STATE" });
    const tokens = await client.authorizationCodeGrant(config, url, {
      pkceCodeVerifier: checks.codeVerifier,
      expectedState: state,
      expectedNonce: checks.nonce,
      idTokenExpected: true,
    });
    const claims = tokens.claims();
    const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
    const device = claims.device ?? {};
    sendHtml(res, 200, page("Signed in", `<h1>Signed in</h1>` +
      `<p id="device" data-udid="${html(device.udid)}" data-serial-number="${html(device.serial_number)}"` +
      ` data-certificate-serial="${html(device.certificate_serial)}"></p>` +
      `<p id="sub">${html(claims.sub)}</p>` +
      `<pre id="claims">${html(JSON.stringify(claims, null, 2))}</pre>` +
      `<pre id="userinfo">${html(JSON.stringify(userinfo, null, 2))}</pre>` +
      `<pre id="id-token">${html(tokens.id_token)}</pre>`));
  } catch (error) {
    // An error answer reaches the page only through the library, which checks its state and
    // iss first (RFC 9207): a refusal the CA sent back is one the client could trust.
    if (error instanceof client.AuthorizationResponseError) {
      return sendHtml(res, 200, page("Refused", `<h1>Refused</h1><p id="error" data-error="${html(error.error)}">` +
        `${html(error.error_description ?? "")}</p>`));
    }
    const message = describe(error);
    console.error(`oidc-rp: callback failed: ${error.code ?? error.name}: ${message}`);
    sendHtml(res, 500, failurePage(error.code ?? error.name, message));
  }
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, ownUrl);
  const route = `${req.method} ${url.pathname}`;
  const handler = route === "POST /configure" ? () => configure(req, res)
    : route === "GET /login" ? () => login(url, res)
    : route === "GET /callback" ? () => callback(url, res)
    : () => sendJson(res, 404, { error: "not found" });
  Promise.resolve().then(handler).catch((error) => {
    console.error(`oidc-rp: ${route}: ${error.stack ?? error}`);
    if (!res.headersSent) sendHtml(res, 500, failurePage(error.code ?? error.name, error.message));
    else res.destroy();
  });
});

server.listen(port, "127.0.0.1", () => {
  ownUrl = `http://127.0.0.1:${server.address().port}`;
  console.log(JSON.stringify({ url: ownUrl }));
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
