// The built-in chat client: the ChatKit protocol over fetch, no framework, nothing
// fetched from anywhere but this server. boot.js starts it when ChatKit cannot load.
import { ApiError } from "./api.js";
import { PendingAttachments } from "./attachments.js";
import {
  el, icon, iconButton, renderError, renderItem, renderNotice, setPart, showFeedback,
  streamPart, updateTask,
} from "./render.js";

const $ = (id) => document.getElementById(id);
const THREADS_PAGE = 30;
const ITEMS_PAGE = 50;
// A thread the server has no title for (yet), in the header and the list alike.
const UNTITLED = "Untitled chat";
// The header before there is a thread: the start screen.
const NO_THREAD = "New chat";

export function startBuiltin({ api, prompts }) {
  new ChatApp(api, prompts).start();
}

class ChatApp {
  constructor(api, prompts) {
    this.api = api;
    this.prompts = prompts;
    this.threadId = null;
    this.items = new Map(); // id -> the item as last seen, which deltas extend
    this.attachments = new PendingAttachments(api, $("pending"), (title, message) =>
      this.notice("danger", title, message),
    );
    this.controller = null; // aborts the answer streaming now
    this.view = 0; // bumped on every thread switch, so late answers for another are dropped
    this.threadsAfter = null;
    this.itemsAfter = null;
    // Thread id -> its title as the server last gave one (null: none yet). The header and
    // the list both show it from here, so they cannot disagree.
    this.titles = new Map();
    this.following = true; // the reader is at the bottom: new text scrolls into view
    this.followAnswer = () => this.scrollToEnd(false);
  }

  start() {
    $("builtin").hidden = false;
    this.bindComposer();
    this.bindThreads();
    for (const { label, prompt, icon: name } of this.prompts) {
      const button = el("button", "prompt");
      button.type = "button";
      button.append(icon(name), el("span", "", label));
      button.addEventListener("click", () => this.send(prompt));
      $("prompts").append(button);
    }
    window.addEventListener("hashchange", () => this.openFromHash());
    $("scroller").addEventListener("scroll", () => (this.following = this.nearEnd()));
    this.loadThreads();
    this.openFromHash();
    $("composer-input").focus();
  }

  // ---- threads ----

  bindThreads() {
    $("new-chat").addEventListener("click", () => {
      location.hash = "";
      this.openFromHash();
      $("composer-input").focus();
    });
    $("more-threads").addEventListener("click", () => this.loadThreads(true));
    $("earlier").addEventListener("click", () => this.loadItems(this.view, true));
  }

  async loadThreads(more = false) {
    try {
      const after = more ? this.threadsAfter : undefined;
      const page = await this.api.call("threads.list", { limit: THREADS_PAGE, order: "desc", after });
      const list = $("thread-list");
      const shown = new Map([...list.children].map((li) => [li.dataset.id, li]));
      const rows = page.data.map((thread) => shown.get(thread.id) || this.threadRow(thread));
      for (const thread of page.data) this.learnTitle(thread);
      if (more) {
        list.append(...rows);
      } else {
        // Threads started while this page was on its way are newer than all of it.
        const listed = new Set(page.data.map((thread) => thread.id));
        const newer = [...list.children].filter((li) => !listed.has(li.dataset.id));
        list.replaceChildren(...newer, ...rows);
      }
      this.threadsAfter = page.after;
      $("more-threads").hidden = !page.has_more;
      this.markCurrent();
    } catch (error) {
      this.notice("danger", "Could not load conversations", error.message);
    }
  }

  threadRow(thread) {
    const li = el("li", "thread");
    li.dataset.id = thread.id;
    const link = el("a", "thread-open");
    link.href = `#${thread.id}`;
    li.append(link, el("span", "thread-actions"));
    li.lastChild.append(
      iconButton("pencil", "Rename", () => this.rename(li)),
      iconButton("trash", "Delete", () => this.remove(li)),
    );
    this.learnTitle(thread);
    this.titleRow(li, this.titleOf(thread.id));
    return li;
  }

  titleRow(li, text) {
    li.querySelector(".thread-open").textContent = text;
    const [rename, remove] = li.querySelectorAll(".thread-actions button");
    rename.setAttribute("aria-label", `Rename “${text}”`);
    remove.setAttribute("aria-label", `Delete “${text}”`);
  }

  row(id) {
    return $("thread-list").querySelector(`li[data-id="${CSS.escape(id)}"]`);
  }

  titleOf(id) {
    return this.titles.get(id) || UNTITLED;
  }

  /**
   * A thread as the server sent it (threads.list, threads.get_by_id, thread.created,
   * thread.updated, threads.update), shown wherever it is. A missing title never hides
   * a known one: a list fetched before the title was made can arrive after it.
   */
  learnTitle(thread) {
    if (thread.title || !this.titles.has(thread.id)) this.titles.set(thread.id, thread.title || null);
    const li = this.row(thread.id);
    if (li) this.titleRow(li, this.titleOf(thread.id));
    if (thread.id === this.threadId) $("thread-title").textContent = this.titleOf(thread.id);
  }

  markCurrent() {
    for (const link of $("thread-list").querySelectorAll(".thread-open")) {
      const current = link.closest("li").dataset.id === this.threadId;
      if (current) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  rename(li) {
    const link = li.querySelector(".thread-open");
    const input = el("input", "rename-input");
    input.value = link.textContent;
    input.setAttribute("aria-label", "New title");
    link.hidden = true;
    li.prepend(input);
    input.focus();
    input.select();
    let finished = false;
    const finish = async (save) => {
      if (finished) return;
      finished = true;
      const title = input.value.trim();
      input.remove();
      link.hidden = false;
      link.focus();
      if (!save || !title || title === link.textContent) return;
      try {
        this.learnTitle(await this.api.call("threads.update", { thread_id: li.dataset.id, title }));
      } catch (error) {
        this.notice("danger", "Could not rename", error.message);
      }
    };
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation(); // Escape here cancels the rename, not an answer
        finish(event.key === "Enter");
      }
    });
    input.addEventListener("blur", () => finish(true));
  }

  async remove(li) {
    const title = li.querySelector(".thread-open").textContent;
    if (!confirm(`Delete “${title}”? This cannot be undone.`)) return;
    try {
      await this.api.call("threads.delete", { thread_id: li.dataset.id });
    } catch (error) {
      this.notice("danger", "Could not delete", error.message);
      return;
    }
    const neighbour = li.nextElementSibling || li.previousElementSibling;
    li.remove();
    this.titles.delete(li.dataset.id);
    if (li.dataset.id === this.threadId) {
      location.hash = "";
      this.openFromHash();
    }
    (neighbour?.querySelector(".thread-open") || $("new-chat")).focus();
  }

  // ---- one thread ----

  openFromHash() {
    const id = decodeURIComponent(location.hash.slice(1));
    const wanted = id.startsWith("thr_") ? id : null;
    if (wanted === this.threadId && this.view) return;
    this.controller?.abort(); // the server keeps what was said so far
    this.view += 1;
    this.threadId = wanted;
    this.items.clear();
    $("messages").replaceChildren();
    $("earlier").hidden = true;
    $("start").hidden = Boolean(wanted);
    // A thread's title as far as it is known already; threads.get_by_id will tell.
    $("thread-title").textContent = !wanted ? NO_THREAD : this.titles.get(wanted) || "";
    this.markCurrent();
    if (wanted) this.openThread(wanted, this.view);
  }

  async openThread(id, view) {
    try {
      const thread = await this.api.call("threads.get_by_id", { thread_id: id });
      if (view !== this.view) return;
      this.learnTitle(thread);
      await this.loadItems(view, false);
    } catch (error) {
      if (view !== this.view) return;
      const gone = error instanceof ApiError && error.status === 404;
      this.notice("danger", gone ? "Not found" : "Could not open", gone ? "That conversation does not exist (any more)." : error.message);
      $("start").hidden = false;
      if (!$("thread-title").textContent) $("thread-title").textContent = NO_THREAD;
    }
  }

  async loadItems(view, earlier) {
    const after = earlier ? this.itemsAfter : undefined;
    const page = await this.api.call("items.list", { thread_id: this.threadId, order: "desc", limit: ITEMS_PAGE, after });
    if (view !== this.view) return;
    const nodes = [];
    for (const item of page.data.reverse()) {
      this.items.set(item.id, item);
      const node = renderItem(item, this.itemActions());
      if (node) nodes.push(node);
    }
    $("messages").prepend(...nodes);
    this.itemsAfter = page.after;
    $("earlier").hidden = !page.has_more;
    if (!earlier) this.scrollToEnd(true);
  }

  itemActions() {
    return {
      onFeedback: (item, kind, li) => this.feedback(item, kind, li),
      onRetry: (item) => this.retry(item),
    };
  }

  async feedback(item, kind, li) {
    try {
      await this.api.call("items.feedback", { thread_id: item.thread_id, item_ids: [item.id], kind });
      showFeedback(li, kind);
    } catch (error) {
      this.notice("danger", "Could not send feedback", error.message);
    }
  }

  /** Answer again: drop everything after the user message the answer was for. */
  async retry(answer) {
    if (this.controller) return;
    const nodes = [...$("messages").children];
    const found = answer ? nodes.findIndex((node) => node.dataset.id === answer.id) : -1;
    const at = found >= 0 ? found : nodes.length;
    const user = nodes.slice(0, at).reverse().find((node) => node.dataset.type === "user_message");
    if (!user) return;
    for (const node of nodes.slice(nodes.indexOf(user) + 1)) node.remove();
    await this.run("threads.retry_after_item", { thread_id: this.threadId, item_id: user.dataset.id });
  }

  // ---- sending and streaming ----

  async send(text) {
    if (this.controller) return;
    if (this.attachments.uploading) {
      this.notice("warning", "Uploading", "Wait for the attachments to finish uploading.");
      return;
    }
    const attachments = this.attachments.ids;
    if (!text.trim() && !attachments.length) return;
    const input = { content: [{ type: "input_text", text }], attachments, inference_options: {} };
    const [type, params] = this.threadId
      ? ["threads.add_user_message", { thread_id: this.threadId, input }]
      : ["threads.create", { input }];
    $("composer-input").value = "";
    $("composer-input").style.height = "auto";
    const taken = this.attachments.take();
    if (await this.run(type, params)) {
      this.attachments.release(taken);
    } else {
      // Refused before anything was stored: give the message back to edit.
      $("composer-input").value = text;
      this.attachments.restore(taken);
    }
  }

  /** One streamed request; true once the server has started answering. */
  async run(type, params) {
    const controller = new AbortController();
    const view = this.view;
    let started = false;
    this.controller = controller;
    this.setBusy(true);
    try {
      await this.api.stream(type, params, (event) => {
        started = true;
        if (view === this.view) this.onEvent(event);
      }, controller.signal);
    } catch (error) {
      if (error.name === "AbortError") {
        for (const node of $("messages").querySelectorAll(".streaming")) node.classList.add("stopped");
      } else if (view === this.view) {
        $("messages").append(renderError(error.message, started ? () => this.retry(null) : null));
      }
    } finally {
      this.controller = null;
      this.setBusy(false);
    }
    return started;
  }

  onEvent(event) {
    switch (event.type) {
      case "thread.created":
        this.adopt(event.thread);
        break;
      case "thread.updated":
        this.learnTitle(event.thread);
        break;
      case "thread.item.added":
      case "thread.item.done":
      case "thread.item.replaced":
        this.upsert(event.item, event.type === "thread.item.added");
        break;
      case "thread.item.updated":
        this.update(event.item_id, event.update);
        break;
      case "thread.item.removed":
        this.items.delete(event.item_id);
        this.element(event.item_id)?.remove();
        break;
      case "stream_options":
        $("stop").disabled = !event.stream_options.allow_cancel;
        break;
      case "progress_update":
        $("progress").textContent = event.text;
        break;
      case "notice":
        this.notice(event.level, event.title, event.message);
        break;
      case "error":
        $("messages").append(renderError(event.message || "Something went wrong.", event.allow_retry ? () => this.retry(null) : null));
        break;
      default:
        break; // client effects and newer event types: nothing to show
    }
    this.scrollToEnd(false);
  }

  adopt(thread) {
    this.threadId = thread.id;
    history.pushState(null, "", `#${thread.id}`); // no hashchange: this view stays
    $("start").hidden = true;
    // The list may have it already, if it was fetched while the thread was being made.
    $("thread-list").prepend(this.row(thread.id) || this.threadRow(thread));
    this.learnTitle(thread);
    this.markCurrent();
  }

  element(id) {
    return $("messages").querySelector(`li[data-id="${CSS.escape(id)}"]`);
  }

  upsert(item, streaming) {
    this.items.set(item.id, item);
    $("progress").textContent = "";
    const node = renderItem(item, this.itemActions());
    const old = this.element(item.id);
    if (node && streaming) node.classList.add("streaming");
    if (old && node) old.replaceWith(node);
    else if (old) old.remove();
    else if (node) $("messages").append(node);
  }

  update(id, update) {
    const item = this.items.get(id);
    const node = this.element(id);
    if (!item || !node) return;
    const index = update.content_index;
    switch (update.type) {
      case "assistant_message.content_part.added":
      case "assistant_message.content_part.done":
        item.content[index] = update.content;
        setPart(node, index, update.content.text);
        break;
      case "assistant_message.content_part.text_delta":
        item.content[index] = item.content[index] || { type: "output_text", text: "", annotations: [] };
        item.content[index].text += update.delta;
        // Markdown is parsed whole: once per frame, not once per delta.
        streamPart(node, index, item.content[index].text, this.followAnswer);
        break;
      case "workflow.task.added":
      case "workflow.task.updated":
        item.workflow.tasks[update.task_index] = update.task;
        updateTask(node, update.task_index, update.task);
        break;
      default:
        break; // annotations, widget updates: shown when the item is done
    }
  }

  setBusy(busy) {
    $("send").hidden = busy;
    $("stop").hidden = !busy;
    $("stop").disabled = false;
    $("messages").setAttribute("aria-busy", String(busy)); // read once complete
    if (!busy) {
      $("progress").textContent = "";
      for (const node of $("messages").querySelectorAll(".streaming")) node.classList.remove("streaming");
    } else {
      $("progress").textContent = "Thinking…";
    }
    if (!busy && document.activeElement === $("stop")) $("composer-input").focus();
  }

  // ---- the composer ----

  bindComposer() {
    const input = $("composer-input");
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      this.send(input.value);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send(input.value);
      }
    });
    input.addEventListener("input", () => {
      input.style.height = "auto";
      input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
    });
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.controller) this.controller.abort();
    });
    $("stop").addEventListener("click", () => this.controller?.abort());
    $("attach").addEventListener("click", () => $("file-input").click());
    this.attachments.bind($("file-input"), input, $("composer"));
  }

  notice(level, title, message) {
    const box = renderNotice(level, title, message);
    $("notices").append(box);
    if (level !== "danger") setTimeout(() => box.remove(), 8000);
  }

  nearEnd() {
    const scroller = $("scroller");
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
  }

  /**
   * Follow the answer while the reader is at the bottom; `force` after opening a thread.
   * "At the bottom" is as of the reader's last scroll, not now: a table or code block
   * drawn in one frame can grow the answer by more than any margin.
   */
  scrollToEnd(force) {
    const scroller = $("scroller");
    if (force) this.following = true; // no scroll event if it is at the end already
    if (this.following) scroller.scrollTop = scroller.scrollHeight;
  }
}
