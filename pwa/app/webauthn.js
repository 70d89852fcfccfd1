// Hardware-bound unlock (issue 10, item 16): WebAuthn with the PRF extension on a platform authenticator
// (fingerprint, face, Windows Hello) gives 32 secret bytes that only this device's authenticator can produce;
// pyclient (keys.py) turns them into a second wrapping of the PIN-wrapped device key, so a copied IndexedDB
// is useless without the device. Where the browser has no such authenticator, nothing here is used and
// roles with wide scope must choose a passphrase instead of a PIN.

const b64 = (u8) => btoa(String.fromCharCode(...new Uint8Array(u8)));
const unb64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

/** True when a user-verifying platform authenticator exists (PRF support is only known after create). */
export async function available() {
  try {
    return !!(window.PublicKeyCredential && location.hostname && !/^[\d.]+$|:/.test(location.hostname)
      && await PublicKeyCredential.isUserVerifyingPlatformAuthenticatorAvailable());
  } catch { return false; }
}

/**
 * Create a device credential with PRF and evaluate it once. Returns { credentialId, input, output } (base64)
 * or null when the authenticator does not do PRF (or the user declined): the caller falls back to the PIN rule.
 */
export async function enroll(username) {
  if (!(await available())) return null;
  const input = crypto.getRandomValues(new Uint8Array(32));
  try {
    const cred = await navigator.credentials.create({ publicKey: {
      rp: { name: "OmniCare", id: location.hostname },
      user: { id: crypto.getRandomValues(new Uint8Array(16)), name: username, displayName: username },
      challenge: crypto.getRandomValues(new Uint8Array(32)), // no server: the assertion is never sent anywhere
      pubKeyCredParams: [{ type: "public-key", alg: -7 }, { type: "public-key", alg: -257 }],
      authenticatorSelection: { authenticatorAttachment: "platform", userVerification: "required", residentKey: "discouraged" },
      timeout: 60000,
      extensions: { prf: { eval: { first: input } } },
    } });
    const ext = cred.getClientExtensionResults().prf;
    if (!ext || ext.enabled === false) return null;
    const credentialId = b64(cred.rawId);
    let output = ext.results && ext.results.first;
    if (!output) output = unb64(await evaluate(credentialId, b64(input))); // some authenticators eval only on get
    return { credentialId, input: b64(input), output: b64(output) };
  } catch { return null; }
}

/** The PRF output (base64) of this device's credential for `input` (base64); throws if the user cancels. */
export async function evaluate(credentialId, input) {
  const a = await navigator.credentials.get({ publicKey: {
    rpId: location.hostname, challenge: crypto.getRandomValues(new Uint8Array(32)), timeout: 60000,
    allowCredentials: [{ type: "public-key", id: unb64(credentialId), transports: ["internal"] }],
    userVerification: "required", extensions: { prf: { eval: { first: unb64(input) } } },
  } });
  const r = a.getClientExtensionResults().prf;
  if (!r || !r.results || !r.results.first) throw new Error("This device's authenticator gave no key.");
  return b64(r.results.first);
}

/** For the unlock screen: the PRF output when this device's key is hardware-bound, else null. */
export async function unlockSecret(py) {
  const info = await py.call("unlock_info");
  if (!info.hardwareBound) return null;
  return evaluate(info.credentialId, info.input);
}
