// Verifies a DeviceTrust device assertion with `jose`, a JOSE library other than the one
// the CA signs with, so that the end-to-end test proves the token is plain, portable JWT.
//
// Usage: node verify.mjs <jwks-url-or-file> <token> <iss> <aud>
// Prints the verified payload as one JSON line and exits 0; exits 1 (with the reason on
// stderr) when the token does not verify, 2 on bad usage.
import { readFile } from "node:fs/promises";
import { createLocalJWKSet, createRemoteJWKSet, jwtVerify } from "jose";

const [jwksSource, token, issuer, audience] = process.argv.slice(2);
if (!jwksSource || !token || !issuer || !audience) {
  console.error("usage: node verify.mjs <jwks-url-or-file> <token> <iss> <aud>");
  process.exit(2);
}

try {
  const keys = /^https?:\/\//.test(jwksSource)
    ? createRemoteJWKSet(new URL(jwksSource), { timeoutDuration: 10000 })
    : createLocalJWKSet(JSON.parse(await readFile(jwksSource, "utf8")));
  const { payload, protectedHeader } = await jwtVerify(token, keys, {
    issuer,
    audience,
    algorithms: ["ES256"],
    requiredClaims: ["iat", "exp", "sub"],
  });
  console.log(JSON.stringify({ header: protectedHeader, payload }));
} catch (error) {
  console.error(`the assertion does not verify: ${error.code ?? ""} ${error.message}`);
  process.exit(1);
}
