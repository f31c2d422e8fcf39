// Files waiting in the composer: uploaded as soon as they are picked (the direct
// upload of ChatKit), previewed from the local file until the server's preview arrives.
import { el, iconButton, renderAttachment } from "./render.js";

export class PendingAttachments {
  constructor(api, list, onError) {
    this.api = api;
    this.list = list;
    this.onError = onError;
    this.entries = []; // {file, localUrl, attachment (once uploaded), removed}
  }

  get uploading() {
    return this.entries.some((entry) => !entry.attachment);
  }

  get ids() {
    return this.entries.map((entry) => entry.attachment.id);
  }

  /** Hands the entries to a message being sent; `restore` gives them back if it fails. */
  take() {
    const taken = this.entries;
    this.show([]);
    return taken;
  }

  restore(entries) {
    this.show(entries);
  }

  release(entries) {
    for (const entry of entries) URL.revokeObjectURL(entry.localUrl);
  }

  /** File picker, paste and drop all end here. */
  bind(picker, pasteTarget, dropZone) {
    picker.addEventListener("change", () => {
      this.add([...picker.files]);
      picker.value = "";
    });
    pasteTarget.addEventListener("paste", (event) => {
      const files = [...(event.clipboardData?.files || [])];
      if (files.length) {
        event.preventDefault();
        this.add(files);
      }
    });
    dropZone.addEventListener("dragover", (event) => event.preventDefault());
    dropZone.addEventListener("drop", (event) => {
      event.preventDefault();
      this.add([...(event.dataTransfer?.files || [])]);
    });
  }

  add(files) {
    for (const file of files) {
      const entry = { file, localUrl: URL.createObjectURL(file), attachment: null, removed: false };
      this.show([...this.entries, entry]);
      this.api.upload(file).then(
        (attachment) => {
          entry.attachment = attachment;
          if (entry.removed) this.forget(attachment); // removed while it was uploading
          else this.show(this.entries);
        },
        (error) => {
          this.onError(`Could not attach ${file.name}`, error.message);
          this.remove(entry);
        },
      );
    }
  }

  remove(entry) {
    entry.removed = true;
    if (entry.attachment) this.forget(entry.attachment);
    URL.revokeObjectURL(entry.localUrl);
    this.show(this.entries.filter((other) => other !== entry));
  }

  forget(attachment) {
    // Best effort: unsent uploads are also cleaned up by the server.
    this.api.call("attachments.delete", { attachment_id: attachment.id }).catch(() => {});
  }

  show(entries) {
    this.entries = entries;
    this.list.replaceChildren();
    for (const entry of entries) {
      const shown = entry.attachment || {
        name: entry.file.name,
        type: entry.file.type.startsWith("image/") ? "image" : "file",
      };
      const li = renderAttachment(shown, entry.localUrl);
      li.classList.toggle("uploading", !entry.attachment);
      if (!entry.attachment) li.append(el("span", "visually-hidden", "uploading"));
      li.append(iconButton("close", `Remove ${entry.file.name}`, () => this.remove(entry)));
      this.list.append(li);
    }
    this.list.hidden = entries.length === 0;
  }
}
