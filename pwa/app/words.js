// Generated from pyclient.outcome.BROWSER_WORDS by scripts/gen_words_js.py: do not edit.
// The words the browser says when neither the server nor its Python can (PROTOCOL.md §9).
export const WORDS = Object.freeze({
  noServer: "No connection to the server.",
  noServerNothingSaved: "No connection to the server. Nothing was saved.",
  signInFailed: "Sign-in failed.",
  revokedPill: "Device revoked",
  revokedTitle: "This device was revoked",
  revokedBody: "An administrator reported this device lost or stolen. All patient data, keys and unsynced changes have been erased from it.",
  revokedHelp: "If this is a mistake, contact your OmniCare administrator. They can register the device again; you will then sign in and download your patients anew.",
  revokedBack: "Back to sign-in",
});
