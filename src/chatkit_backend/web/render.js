// DOM for thread items. Text from the server goes in as text, never as HTML, except the
// assistant's answers: Markdown, made into HTML by marked and cleaned by DOMPurify.
import { Marked } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.mjs";

/** An icon drawn in index.html (a <template>), so nothing is fetched. */
export function icon(name) {
  const template = document.getElementById(`icon-${name}`) || document.getElementById("icon-dot");
  return template.content.firstElementChild.cloneNode(true);
}

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

export function iconButton(name, label, onClick) {
  const button = el("button", "icon-button");
  button.type = "button";
  button.title = label;
  button.setAttribute("aria-label", label);
  button.append(icon(name));
  button.addEventListener("click", onClick);
  return button;
}

/** The element for an item, or null for items people do not see. */
export function renderItem(item, actions) {
  switch (item.type) {
    case "user_message":
      return renderUser(item);
    case "assistant_message":
      return renderAssistant(item, actions);
    case "workflow":
      return renderWorkflow(item);
    case "task": {
      const tasks = el("ul", "tasks");
      tasks.append(renderTask(item.task));
      return shell(item, "workflow", tasks);
    }
    case "widget":
      return shell(item, "muted", el("p", "part", item.copy_text || "A widget this client cannot show."));
    case "generated_image":
      return item.image ? shell(item, "assistant", image(item.image.url, "Generated image")) : null;
    case "client_tool_call":
      return shell(item, "muted", el("p", "part", `Client tool ${item.name} (${item.status})`));
    case "structured_input":
      return shell(item, "muted", el("p", "part", "A question this client cannot show."));
    default:
      return null; // end_of_turn, hidden context: for the model, not for people
  }
}

function shell(item, kind, ...children) {
  const li = el("li", `item ${kind}`);
  li.dataset.id = item.id;
  li.dataset.type = item.type;
  const bubble = el("div", "bubble");
  bubble.append(...children);
  li.append(bubble);
  return li;
}

function renderUser(item) {
  const parts = [];
  if (item.quoted_text) parts.push(el("blockquote", "quote", item.quoted_text));
  if (item.attachments?.length) {
    const list = el("ul", "attachments");
    for (const attachment of item.attachments) list.append(renderAttachment(attachment));
    parts.push(list);
  }
  const text = item.content.map((part) => (part.type === "input_tag" ? `@${part.text}` : part.text));
  if (text.join("").trim()) parts.push(el("p", "part", text.join("")));
  const li = shell(item, "user", ...parts);
  li.setAttribute("aria-label", "You said");
  return li;
}

function renderAssistant(item, actions) {
  const li = shell(item, "assistant");
  li.setAttribute("aria-label", "The assistant said");
  const bubble = li.querySelector(".bubble");
  for (const part of item.content) bubble.append(markdownPart(part.text));
  const bar = el("div", "actions");
  bar.append(
    feedbackButton("thumbs-up", "Good answer", () => actions.onFeedback(item, "positive", li)),
    feedbackButton("thumbs-down", "Bad answer", () => actions.onFeedback(item, "negative", li)),
    iconButton("retry", "Retry this answer", () => actions.onRetry(item)),
  );
  li.append(bar);
  return li;
}

function feedbackButton(name, label, onClick) {
  const button = iconButton(name, label, onClick);
  button.classList.add("feedback");
  button.setAttribute("aria-pressed", "false");
  return button;
}

/** Marks the chosen rating as pressed and the other as not. */
export function showFeedback(li, kind) {
  const buttons = li.querySelectorAll("button.feedback");
  buttons[0].setAttribute("aria-pressed", String(kind === "positive"));
  buttons[1].setAttribute("aria-pressed", String(kind === "negative"));
}

/** The element of an answer's content part `index`, created on first use. */
function part(li, index) {
  const parts = li.querySelectorAll(".bubble > .part");
  if (parts[index]) return parts[index];
  const bubble = li.querySelector(".bubble");
  let created = null;
  for (let i = parts.length; i <= index; i++) bubble.append((created = markdownPart("")));
  return created;
}

// Parts whose text grew since they were last drawn, and what to run once they are.
const waiting = new Map();
const afterDrawing = new Set();
let frame = 0;

/**
 * Shows `text` (the answer so far) as part `index` at the next animation frame: however
 * many deltas arrive within a frame, the Markdown is parsed and the DOM replaced once.
 * `then` runs after the drawing (to follow the answer down).
 */
export function streamPart(li, index, text, then) {
  waiting.set(part(li, index), text);
  if (then) afterDrawing.add(then);
  frame ||= requestAnimationFrame(drawWaiting);
}

function drawWaiting() {
  frame = 0;
  for (const [node, text] of waiting) renderMarkdown(node, text);
  waiting.clear();
  const callbacks = [...afterDrawing];
  afterDrawing.clear();
  for (const callback of callbacks) callback();
}

/** Shows `text` as part `index` now (a part's whole text: added or done). */
export function setPart(li, index, text) {
  const node = part(li, index);
  waiting.delete(node);
  renderMarkdown(node, text);
}

// ---- Markdown ----

const markdown = new Marked({
  gfm: true,
  breaks: true, // a single newline stays a line break, as when answers were plain text
  renderer: {
    // Raw HTML in an answer is shown as the text it is: a model quoting HTML means it
    // to be read, and rendered it would let text injected into a prompt shape the page.
    html({ text, block }) {
      const shown = escapeHtml(text);
      return block ? `<p>${shown.replace(/\n/g, "<br>")}</p>\n` : shown;
    },
    // Pictures become links, never fetched: an image address is where injected text
    // would send the conversation (and the page's policy refuses other hosts anyway).
    image({ href, text }) {
      return `<a href="${escapeHtml(href)}">${escapeHtml(text || href)}</a>`;
    },
  },
});

// What Markdown makes, and no more: no images, forms, frames, styles or scripts.
const PURIFY = {
  ALLOWED_TAGS: [
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
    "input", "li", "ol", "p", "pre", "s", "strong", "table", "tbody", "td", "th", "thead",
    "tr", "ul",
  ],
  ALLOWED_ATTR: ["href", "title", "align", "start", "type", "checked", "disabled", "class"],
  // Web, mail and addresses on this server; never javascript:, data: or the like.
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("uponSanitizeAttribute", (node, data) => {
  // Classes only as marked writes them, for a code block's language.
  if (data.attrName === "class") {
    data.keepAttr = node.nodeName === "CODE" && /^language-[\w+#.-]+$/.test(data.attrValue);
  }
});
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.nodeName === "A" && node.hasAttribute("href")) {
    // Away from the chat, and without handing the page (or its address) to the other site.
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  } else if (node.nodeName === "INPUT") {
    // Only a task list's box, which shows and cannot change.
    node.setAttribute("type", "checkbox");
    node.setAttribute("disabled", "");
  }
});

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function markdownPart(text) {
  const node = el("div", "part markdown");
  renderMarkdown(node, text);
  return node;
}

function renderMarkdown(node, text) {
  if (!DOMPurify.isSupported) {
    node.textContent = text; // a browser DOMPurify cannot clean for gets the plain text
    return;
  }
  // Trimmed: no stray newline after the last block, in the DOM or its text.
  const fragment = DOMPurify.sanitize(markdown.parse(text).trim(), PURIFY);
  for (const table of fragment.querySelectorAll("table")) {
    const scroll = el("div", "table-scroll"); // a wide table scrolls, not the whole answer
    table.replaceWith(scroll);
    scroll.append(table);
  }
  for (const pre of fragment.querySelectorAll("pre")) codeBlock(pre);
  node.replaceChildren(fragment);
}

/** A code block with its language and a button that copies it. */
function codeBlock(pre) {
  const box = el("div", "code-block");
  const bar = el("div", "code-bar");
  const language = pre.querySelector("code")?.className.replace(/^language-/, "") || "";
  const copy = el("button", "text-button copy", "Copy");
  copy.type = "button";
  copy.addEventListener("click", async () => {
    const copied = await copyText(pre.textContent.replace(/\n$/, ""));
    copy.textContent = copied ? "Copied" : "Could not copy";
    setTimeout(() => (copy.textContent = "Copy"), 2000);
  });
  bar.append(el("span", "code-language", language), copy);
  pre.replaceWith(box);
  box.append(bar, pre);
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // No clipboard API (a page served over plain http from another host): the old way.
    const area = el("textarea", "offscreen");
    area.value = text;
    document.body.append(area);
    area.select();
    const copied = document.execCommand("copy");
    area.remove();
    return copied;
  }
}

function renderWorkflow(item) {
  const workflow = item.workflow;
  const details = el("details", "workflow-box");
  details.open = workflow.expanded || workflow.type === "custom";
  const summary = el("summary", "", workflowTitle(workflow));
  const tasks = el("ul", "tasks");
  for (const task of workflow.tasks) tasks.append(renderTask(task));
  details.append(summary, tasks);
  return shell(item, "workflow", details);
}

function workflowTitle(workflow) {
  if (workflow.summary?.title) return workflow.summary.title;
  if (workflow.summary?.duration) return `Worked for ${workflow.summary.duration} s`;
  const count = workflow.tasks.length;
  return workflow.type === "reasoning" ? "Thinking" : `${count} step${count === 1 ? "" : "s"}`;
}

function renderTask(task) {
  const li = el("li", `task status-${task.status_indicator || "none"}`);
  const mark = el("span", "task-mark");
  if (task.status_indicator === "loading") mark.append(el("span", "spinner"));
  else mark.append(icon(task.status_indicator === "complete" ? "check" : task.icon || "dot"));
  const status = { loading: "in progress", complete: "done" }[task.status_indicator];
  if (status) mark.append(el("span", "visually-hidden", status));
  const title = task.title || task.title_query || { thought: "Thought", web_search: "Searched the web", file: "Read files", image: "Made an image" }[task.type] || "Step";
  li.append(mark, el("span", "task-title", title));
  const content = task.content || (task.queries || []).join(", ");
  if (content) li.append(el("p", "task-content", content));
  return li;
}

/** Replaces (or adds) task `index` of a workflow element. */
export function updateTask(li, index, task) {
  const tasks = li.querySelector(".tasks");
  if (!tasks) return;
  const fresh = renderTask(task);
  if (tasks.children[index]) tasks.children[index].replaceWith(fresh);
  else tasks.append(fresh);
}

export function renderAttachment(attachment, localUrl) {
  const url = attachment.preview_url || localUrl;
  const li = el("li", attachment.type === "image" && url ? "attachment image" : "attachment");
  if (li.classList.contains("image")) li.append(image(url, attachment.name));
  else li.append(icon("file"));
  li.append(el("span", "attachment-name", attachment.name));
  return li;
}

function image(url, alt) {
  const img = el("img", "preview");
  img.src = url;
  img.alt = alt;
  img.loading = "lazy";
  return img;
}

/** A failure shown in the thread, with a retry button when the server allows one. */
export function renderError(message, onRetry) {
  const li = el("li", "item error");
  li.setAttribute("role", "alert");
  const bubble = el("div", "bubble");
  bubble.append(el("p", "part", message));
  if (onRetry) {
    const retry = el("button", "button", "Retry");
    retry.type = "button";
    retry.addEventListener("click", onRetry);
    bubble.append(retry);
  }
  li.append(bubble);
  return li;
}

/** A notice above the composer; danger-level ones interrupt a screen reader. */
export function renderNotice(level, title, message) {
  const box = el("div", `notice ${level}`);
  box.setAttribute("role", level === "danger" ? "alert" : "status");
  const text = el("p", "notice-text");
  if (title) text.append(el("strong", "", `${title}: `));
  text.append(message);
  box.append(text, iconButton("close", "Dismiss", () => box.remove()));
  return box;
}
