// Shared app state for the controller modules (main, auth, routes, forms). No secrets: keys live inside Python.
export const state = {
  py: null, unlocked: false, username: null, persistRefused: false, query: "", firstSync: false, firstSyncCut: false,
  listPage: 50, listLimit: 0, deviceLimit: 0, // patients a list draws at first and after "Show more" (issue 13)
  swVersion: null, updateReady: false, lastStatus: null, route: null, runner: null,
  ready: null, // resolves once the Python runtime and the controller are up (issue 18: sign-in shows before)
};
export const channel = "BroadcastChannel" in window ? new BroadcastChannel("omnicare") : null;

// Hooks main.js fills at start-up, so auth/routes/forms call the status renderer without importing main.js.
export const hooks = { onStatus: (_s) => {}, revokedScreen: () => {}, keepDraft: async () => {} };

// HIPAA automatic logoff; a deployment (or a test) may shorten it via localStorage.
export const idleMinutes = () => Number(localStorage.getItem("omnicare.idleMinutes") || 5);
