"use strict";
// The review page: summarize a pasted text through POST /summarize, show the summary and its
// sentences in place, and record the reviewer's decision through POST /feedback. User text is only
// ever put in the page as text (textContent), never as HTML.

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

async function post(path, body) {
  const response = await fetch(path, {
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
  const response = await fetch("jobs");
  if (!response.ok) {
    setTimeout(showJobs, 15000);
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
  setTimeout(showJobs, busy ? 2000 : 15000);
}

// Never a silent wait: when a function keeps failing on the upload, or no job is recorded for it,
// the server says why (GET uploads/status), and the page shows it.
async function checkAwaited() {
  const query = new URLSearchParams({ key: awaited.key, since: String(awaited.since) });
  const response = await fetch(`uploads/status?${query}`);
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
    say(`Could not upload: ${error.message}`, true, batchStatus);
  }
});

// A job's rows, reviewed one by one in the same panel, with the same decisions.
async function openReview(job) {
  const response = await fetch(job.review);
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
  const info = await (await fetch("batch")).json();
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
  showJobs();
}

startBatch();
