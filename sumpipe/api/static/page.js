"use strict";
// The review page: summarize a pasted text through POST /summarize, show the summary and its
// sentences in place, and record the reviewer's decision through POST /feedback. User text is only
// ever put in the page as text (textContent), never as HTML.
//
// Deployed behind a JWT authorizer, the page carries its sign-in config (<meta name=sumpipe-auth>):
// reviewers then sign in with Cognito first, and every call the page makes sends the access token.

const $ = (selector) => document.querySelector(selector);
const form = $("#summarize-form");
const result = $("#result");
const statusLine = $("[data-testid=status]");
const corrected = $("textarea[name=corrected]");
const reason = $("input[name=reason]");
const reviewer = $("input[name=reviewer]");
const decisionButtons = document.querySelectorAll("button[data-decision]");
let shown = null; // what the reviewer is deciding on: {text, method, summary, sentences, chosen}
let reviewing = null; // a job's rows under review: {job_id, file, method, rows, index}

function say(message, isError = false, line = statusLine) {
  line.textContent = message;
  line.classList.toggle("error", isError);
}

// --- signing in (only when the page carries its config) ------------------------------------------

const authMeta = document.querySelector("meta[name=sumpipe-auth]");
const auth = authMeta ? JSON.parse(authMeta.content) : null; // {endpoint, client_id}
// The tab's session ({token, expiresAt, username}): sessionStorage lives as long as the tab, survives
// the upload's round trip through S3, and is no other tab's; never localStorage or a cookie.
const SESSION_KEY = "sumpipe-session";
const authPanel = $("#auth");
const signInForm = $("[data-testid=sign-in]");
const newPasswordForm = $("[data-testid=new-password]");
const authStatus = $("[data-testid=auth-status]");
const signedInBox = $(".signed-in");
const SESSION_ENDED = "Your session has ended: sign in again.";
let challenge = null; // while choosing a new password: {username, session}

class SignedOut extends Error {}

function currentSession() {
  if (!auth) return null;
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    if (session && session.token && session.expiresAt > Date.now()) return session;
  } catch (error) {
    // not JSON: no session
  }
  return null;
}

// Every call the page makes goes through here: with the token when signed in; a 401 (the token
// expired or was revoked) signs the reviewer out.
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (auth) {
    const session = currentSession();
    if (!session) {
      signOut(SESSION_ENDED);
      throw new SignedOut("not signed in");
    }
    headers.set("Authorization", `Bearer ${session.token}`);
  }
  const response = await fetch(path, { ...options, headers });
  if (auth && response.status === 401) {
    signOut(SESSION_ENDED);
    throw new SignedOut("not signed in");
  }
  return response;
}

// Cognito's errors, in words a reviewer can act on (its own message when it has one).
const COGNITO_ERRORS = {
  NotAuthorizedException: "Wrong username or password.",
  UserNotFoundException: "Wrong username or password.",
  PasswordResetRequiredException: "Your password has to be reset: ask an administrator.", // pragma: allowlist secret (a message)
  TooManyRequestsException: "Too many attempts: wait a minute and try again.",
  LimitExceededException: "Too many attempts: wait a minute and try again.",
  InvalidPasswordException: "That password is not allowed.", // pragma: allowlist secret (a message)
  CodeMismatchException: "The sign-in took too long: start again.",
  ExpiredCodeException: "The sign-in took too long: start again.",
};

async function cognito(action, body) {
  let response;
  try {
    response = await fetch(auth.endpoint, {
      method: "POST",
      headers: {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": `AWSCognitoIdentityProviderService.${action}`,
      },
      body: JSON.stringify(body),
    });
  } catch (error) {
    throw new Error("the sign-in service could not be reached.");
  }
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    const kind = String(answer.__type || "").split("#").pop();
    const message = typeof answer.message === "string" && answer.message ? answer.message : "";
    throw new Error(message || COGNITO_ERRORS[kind] || `${kind || response.status} from the sign-in service.`);
  }
  return answer;
}

function claimsOf(token) {
  const part = token.split(".")[1] || "";
  const base64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function signedIn(result) {
  const claims = claimsOf(result.AccessToken);
  // Its lifetime as Cognito counts it from now, so a wrong clock here doesn't matter.
  const session = {
    token: result.AccessToken,
    expiresAt: Date.now() + (result.ExpiresIn || 3600) * 1000,
    username: claims.username || claims.sub || "",
  };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  showSignedIn(session);
  start();
}

function showSignedIn(session) {
  document.body.classList.remove("signed-out");
  authPanel.hidden = true;
  signInForm.hidden = true;
  newPasswordForm.hidden = true;
  say("", false, authStatus);
  $("[data-testid=signed-in-as]").textContent = `Signed in as ${session.username}`;
  signedInBox.hidden = false;
  // The API records decisions under the signed-in user's name: the page shows the same.
  reviewer.value = session.username;
  reviewer.readOnly = true;
}

function showSignedOut(message, isError = false) {
  document.body.classList.add("signed-out");
  signedInBox.hidden = true;
  authPanel.hidden = false;
  signInForm.hidden = false;
  newPasswordForm.hidden = true;
  challenge = null;
  say(message, isError, authStatus);
  reviewer.readOnly = false;
  reviewer.value = localStorage.getItem("reviewer") || "";
}

// Forgets the session (and, when asked, revokes its tokens at Cognito, best-effort), stops the
// page's polling and clears what the signed-in reviewer was shown.
function signOut(message, revoke = false) {
  let token = null;
  try {
    token = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null")?.token || null;
  } catch (error) {
    // not JSON: nothing to revoke
  }
  sessionStorage.removeItem(SESSION_KEY);
  if (revoke && token) cognito("GlobalSignOut", { AccessToken: token }).catch(() => {});
  clearTimeout(jobsTimer);
  jobsTimer = null;
  awaited = null;
  shown = null;
  reviewing = null;
  result.hidden = true;
  jobsTable.tBodies[0].replaceChildren();
  jobsTable.hidden = true;
  say("");
  say("", false, batchStatus);
  showSignedOut(message, message === SESSION_ENDED);
}

if (auth) {
  signInForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = signInForm.elements.username.value.trim();
    const password = signInForm.elements.password;
    say("Signing in…", false, authStatus);
    try {
      const answer = await cognito("InitiateAuth", {
        AuthFlow: "USER_PASSWORD_AUTH",
        ClientId: auth.client_id,
        AuthParameters: { USERNAME: username, PASSWORD: password.value },
      });
      password.value = "";
      if (answer.ChallengeName === "NEW_PASSWORD_REQUIRED") {
        const parameters = answer.ChallengeParameters || {};
        challenge = {
          username: parameters.USER_ID_FOR_SRP || parameters.USERNAME || username, session: answer.Session,
        };
        signInForm.hidden = true;
        newPasswordForm.hidden = false;
        say("Choose a new password to finish signing in.", false, authStatus);
        newPasswordForm.elements["new-password"].focus();
      } else if (answer.ChallengeName) {
        say(`Could not sign in: this page can't answer Cognito's ${answer.ChallengeName} step.`, true, authStatus);
      } else {
        signedIn(answer.AuthenticationResult);
      }
    } catch (error) {
      say(`Could not sign in: ${error.message}`, true, authStatus);
    }
  });

  newPasswordForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const password = newPasswordForm.elements["new-password"];
    say("Setting the password…", false, authStatus);
    try {
      const answer = await cognito("RespondToAuthChallenge", {
        ChallengeName: "NEW_PASSWORD_REQUIRED",
        ClientId: auth.client_id,
        Session: challenge.session,
        ChallengeResponses: { USERNAME: challenge.username, NEW_PASSWORD: password.value },
      });
      password.value = "";
      if (!answer.AuthenticationResult) throw new Error(`Cognito asks for ${answer.ChallengeName || "another step"}.`);
      challenge = null;
      signedIn(answer.AuthenticationResult);
    } catch (error) {
      say(`Could not set the password: ${error.message}`, true, authStatus);
    }
  });

  $("[data-testid=sign-out]").addEventListener("click", () => signOut("Signed out.", true));
}

// A download the page fetches itself, since a link can't send the token: the server answers where
// to get it (a presigned GET, whose Content-Disposition makes it a download), or, under
// `sumpipe serve`, the file itself, saved through a temporary object URL.
async function download(path, name) {
  const response = await api(path, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    throw new Error(answer.detail || `${response.status} ${response.statusText}`);
  }
  if ((response.headers.get("content-type") || "").startsWith("application/json")) {
    const target = new URL((await response.json()).url, location.href);
    if (!["https:", "http:"].includes(target.protocol)) throw new Error("the server gave no download address");
    location.assign(target.href);
    return;
  }
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  a.hidden = true;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// Signed in, a download link is fetched with the token; without sign-in it stays a plain link.
function downloadOnClick(link, name, line) {
  link.addEventListener("click", (event) => {
    if (!auth) return;
    event.preventDefault();
    download(link.getAttribute("href"), name).catch((error) => {
      if (!(error instanceof SignedOut)) say(`Could not download: ${error.message}`, true, line);
    });
  });
}

// --- the review panel ----------------------------------------------------------------------------

async function post(path, body) {
  const response = await api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.detail || `${response.status} ${response.statusText}`);
  return answer;
}

function newId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

function chosenText() {
  return shown.sentences.filter((_, i) => shown.chosen.has(i)).join(" ");
}

function render(answer) {
  $("[data-testid=summary]").textContent = answer.summary;
  const original = $("[data-testid=original]");
  original.replaceChildren();
  answer.input_sentences.forEach((sentence, i) => {
    const span = document.createElement("span");
    span.className = "sentence";
    span.dataset.index = i;
    span.textContent = sentence;
    span.classList.toggle("in-summary", answer.positions.includes(i));
    span.classList.toggle("in-correction", shown.chosen.has(i));
    span.title = "click to put it in your correction or take it out";
    original.append(span, " ");
  });
  corrected.value = answer.summary;
  reason.value = "";
  result.hidden = false;
  decisionButtons.forEach((button) => { button.disabled = false; });
}

$("[data-testid=original]").addEventListener("click", (event) => {
  const span = event.target.closest(".sentence");
  if (!span || !shown) return;
  const i = Number(span.dataset.index);
  if (shown.chosen.has(i)) shown.chosen.delete(i); else shown.chosen.add(i);
  span.classList.toggle("in-correction", shown.chosen.has(i));
  corrected.value = chosenText();
});

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(form);
  const body = { text: data.get("text"), method: data.get("method"), with_input_sentences: true };
  if (data.get("sentences")) body.sentences = Number(data.get("sentences"));
  say("Summarizing…");
  try {
    const answer = await post("summarize", body);
    shown = {
      text: body.text, method: body.method, summary: answer.summary,
      sentences: answer.input_sentences, chosen: new Set(answer.positions),
    };
    reviewing = null;
    $("#row-nav").hidden = true;
    render(answer);
    say(`${answer.n_sentences_out} of ${answer.n_sentences_in} sentences kept (${answer.status}).`);
  } catch (error) {
    if (error instanceof SignedOut) return; // the sign-in form says why
    result.hidden = true;
    say(`Could not summarize: ${error.message}`, true);
  }
});

decisionButtons.forEach((button) => button.addEventListener("click", async () => {
  const decision = button.dataset.decision;
  const correction = corrected.value.trim();
  if (decision === "correct" && (!correction || correction === shown.summary)) {
    say("To correct it, pick other sentences or edit the words of your correction first.", true);
    corrected.focus();
    return;
  }
  decisionButtons.forEach((b) => { b.disabled = true; });
  try {
    await post("feedback", {
      decision_id: newId(), text: shown.text, method: shown.method, summary_shown: shown.summary,
      decision, corrected_summary: decision === "correct" ? correction : "",
      reason: reason.value.trim(), reviewer: reviewer.value.trim(),
      ...(shown.jobId ? { job_id: shown.jobId, text_id: shown.textId } : {}),
    });
    const done = { approve: "Approved", correct: "Correction saved", reject: "Rejected" }[decision];
    say(`${done}. Thank you: the decision is recorded.`);
  } catch (error) {
    if (error instanceof SignedOut) return; // the sign-in form says why
    decisionButtons.forEach((b) => { b.disabled = false; });
    say(`The decision was not recorded: ${error.message}`, true);
  }
}));

reviewer.value = localStorage.getItem("reviewer") || "";
reviewer.addEventListener("change", () => localStorage.setItem("reviewer", reviewer.value));

// Batch jobs: the upload goes straight to the input bucket (a presigned POST, sent as a plain form
// so no cross-origin request is needed); S3 sends the browser back here when it has the file.
const uploadForm = $("#upload-form");
const batchStatus = $("[data-testid=batch-status]");
const jobsTable = $("[data-testid=jobs]");
const ACTIVE = new Set(["queued", "starting", "running"]);
// The upload just made ({key, since}), until its job has finished or the chain is found broken.
let awaited = null;
let jobsTimer = null; // the next refresh of the jobs list

function refreshJobs(delay) {
  clearTimeout(jobsTimer);
  jobsTimer = setTimeout(() => showJobs().catch(() => {}), delay);
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function when(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleString() : "";
}

async function showJobs() {
  const response = await api("jobs");
  if (!response.ok) {
    refreshJobs(15000);
    return;
  }
  const jobs = await response.json();
  const body = jobsTable.tBodies[0];
  body.replaceChildren();
  for (const job of jobs) {
    const row = body.insertRow();
    row.dataset.jobId = job.job_id;
    cell(row, job.input_key.replace(/^uploads\//, ""));
    cell(row, job.state === "failed" && job.error ? `failed: ${job.error}` : job.state, `state-${job.state}`);
    cell(row, job.rows === null ? "" : job.rows.toLocaleString());
    cell(row, when(job.created_at));
    cell(row, job.took_s === null ? "" : `${job.took_s.toFixed(1)} s`);
    const link = cell(row, "");
    if (job.summary) {
      const a = document.createElement("a");
      a.href = job.summary;
      a.textContent = "Download";
      downloadOnClick(a, "summary", batchStatus);
      link.append(a);
    }
    const review = cell(row, "");
    if (job.review) {
      const a = document.createElement("a");
      a.href = "#single-title";
      a.textContent = "Open";
      a.addEventListener("click", (event) => {
        event.preventDefault();
        openReview(job);
      });
      review.append(a);
    }
  }
  jobsTable.hidden = jobs.length === 0;
  if (awaited) await checkAwaited().catch(() => {});
  // Often while a job is on its way (or the one just uploaded isn't listed yet), else now and then.
  const busy = awaited || jobs.some((job) => ACTIVE.has(job.state));
  refreshJobs(busy ? 2000 : 15000);
}

// Never a silent wait: when a function keeps failing on the upload, or no job is recorded for it,
// the server says why (GET uploads/status), and the page shows it.
async function checkAwaited() {
  const query = new URLSearchParams({ key: awaited.key, since: String(awaited.since) });
  const response = await api(`uploads/status?${query}`);
  if (!response.ok) return;
  const status = await response.json();
  if (status.broken) {
    say(`Its job is not coming: ${status.broken}`, true, batchStatus);
    awaited = null;
  } else if (status.state && !ACTIVE.has(status.state)) {
    awaited = null;
  }
}

// The job options, named as the input object's metadata (sumpipe-<name>) and checked by the server
// as the trigger checks them: an empty field is the default, so it is not sent.
function jobOptions() {
  const options = {};
  for (const field of uploadForm.elements) {
    if (!field.name || field.type === "file") continue;
    const value = field.type === "checkbox" ? (field.checked ? field.value : "") : field.value.trim();
    if (value) options[field.name] = value;
  }
  return options;
}

uploadForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = uploadForm.elements.file;
  const options = jobOptions();
  say(`Uploading ${file.files[0].name}…`, false, batchStatus);
  try {
    const signed = await post("uploads", { filename: file.files[0].name, options });
    const form = document.createElement("form");
    form.method = "post";
    form.enctype = "multipart/form-data";
    form.action = signed.url;
    form.hidden = true;
    for (const [name, value] of Object.entries(signed.fields)) {
      const input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = value;
      form.append(input);
    }
    form.append(file); // S3 reads the fields before the file, which must come last
    document.body.append(form);
    form.submit();
  } catch (error) {
    if (error instanceof SignedOut) return; // the sign-in form says why
    say(`Could not upload: ${error.message}`, true, batchStatus);
  }
});

// A job's rows, reviewed one by one in the same panel, with the same decisions.
async function openReview(job) {
  const response = await api(job.review);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    say(`Could not open the job's rows: ${answer.detail || response.status}`, true, batchStatus);
    return;
  }
  reviewing = {
    jobId: job.job_id, file: job.input_key.replace(/^uploads\//, ""),
    method: answer.method, rows: answer.rows, index: 0,
  };
  showRow();
}

function showRow() {
  const row = reviewing.rows[reviewing.index];
  shown = {
    text: row.text, method: reviewing.method, summary: row.summary, sentences: row.input_sentences,
    chosen: new Set(row.positions), jobId: reviewing.jobId, textId: row.id,
  };
  render({ summary: row.summary, input_sentences: row.input_sentences, positions: row.positions });
  $("[data-testid=row-position]").textContent =
    `${reviewing.file}: row ${reviewing.index + 1} of ${reviewing.rows.length} (id ${row.id})`;
  $("#previous-row").disabled = reviewing.index === 0;
  $("#next-row").disabled = reviewing.index === reviewing.rows.length - 1;
  $("#row-nav").hidden = false;
  say(`${row.status}: ${row.summary ? "the summary is highlighted in the text" : "no summary"}.`);
  result.scrollIntoView();
}

$("#previous-row").addEventListener("click", () => { reviewing.index -= 1; showRow(); });
$("#next-row").addEventListener("click", () => { reviewing.index += 1; showRow(); });

async function startBatch() {
  const info = await (await api("batch")).json();
  if (!info.enabled) {
    const off = $("[data-testid=batch-off]");
    off.textContent = "Batch jobs need a stack: run sumpipe serve --stack NAME, or sumpipe local up first.";
    off.hidden = false;
    return;
  }
  uploadForm.hidden = false;
  if (new URLSearchParams(location.search).has("uploaded")) {
    const key = new URLSearchParams(location.search).get("key") || "";
    awaited = { key, since: Date.now() / 1000 - 30 }; // S3 sent the browser back as it stored the file
    say(`Uploaded ${key.replace(/^uploads\//, "")}: its job is below.`, false, batchStatus);
    history.replaceState(null, "", location.pathname);
  }
  refreshJobs(0);
}

downloadOnClick($("footer a[download]"), "feedback.csv", statusLine);

// What a signed-in (or sign-in-less) page does first; until then it makes no data calls.
function start() {
  startBatch().catch(() => {});
}

if (!auth) {
  start();
} else {
  const session = currentSession();
  if (session) {
    showSignedIn(session);
    start();
  } else {
    const ended = sessionStorage.getItem(SESSION_KEY) !== null;
    sessionStorage.removeItem(SESSION_KEY);
    showSignedOut(ended ? SESSION_ENDED : "", ended);
  }
}
