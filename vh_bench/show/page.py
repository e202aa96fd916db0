"""The run browser's two forms: one self-contained HTML page (images inlined as data URIs, plain
inline CSS and JS, nothing fetched) and the same content as terminal text."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from vh_bench.show.views import CORRECT, HALLUCINATED, AnswerView, Browse, CaptionView, ImageView

# Solid fills, so a screenshot shows exactly these pixels (the browser test looks for them).
COLOURS = {HALLUCINATED: "#e0115f", CORRECT: "#1a9e3f", "missed": "#1f5fd6"}
THUMB_PX = 336


def image_data_uri(path: Path | None, size: int = THUMB_PX) -> str | None:
    """The image, at most `size` px on its long side, as a JPEG data URI (None if unreadable)."""
    if path is None:
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85)
    except (OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def marked_html(cap: CaptionView) -> str:
    out, at = [], 0
    for m in sorted(cap.marks, key=lambda m: m.start):
        out.append(html.escape(cap.text[at : m.start]))
        title = f"{m.kind}: {m.word}"
        out.append(f'<mark class="{m.kind}" title="{html.escape(title)}">{html.escape(cap.text[m.start : m.end])}</mark>')
        at = m.end
    out.append(html.escape(cap.text[at:]))
    return "".join(out)


def _caption_block(cap: CaptionView) -> str:
    attrs = f'class="cap" data-method="{html.escape(cap.method)}" data-hall="{1 if cap.hallucinated else 0}"'
    if cap.error:
        return f'<div {attrs}><span class="method">{html.escape(cap.method)}</span> <span class="err">error: {html.escape(cap.error)}</span></div>'
    missed = "".join(f'<span class="missed">{html.escape(w)}</span>' for w in cap.missed)
    note = ' <span class="note">(no ground truth for this image)</span>' if cap.gt_missing else ""
    counts = f'<span class="counts">{len(cap.hallucinated)} hallucinated, {len(cap.correct)} correct, {len(cap.missed)} missed</span>'
    return (
        f'<div {attrs}><div><span class="method">{html.escape(cap.method)}</span> {counts}{note}</div>'
        f'<p class="text">{marked_html(cap)}</p>'
        + (f'<div class="missedrow">ground truth not mentioned: {missed}</div>' if missed else "")
        + "</div>"
    )


def _answer_row(a: AnswerView) -> str:
    verdict = "right" if a.right else "wrong"
    shown = a.error and f"error: {a.error}" or a.answer
    return (
        f'<tr class="ans {verdict}" data-method="{html.escape(a.method)}"><td>{html.escape(a.method)}</td>'
        f"<td>{html.escape(a.question)}</td><td>{html.escape(shown)}</td><td>{html.escape(a.predicted)}</td>"
        f'<td>{html.escape(a.label)}</td><td class="verdict">{"✔" if a.right else "✘"} {verdict}</td></tr>'
    )


def _image_block(view: ImageView) -> str:
    uri = image_data_uri(view.image_path)
    img = f'<img src="{uri}" alt="{html.escape(view.key)}">' if uri else '<div class="noimg">image not readable</div>'
    title = f"image {view.image_id}" if view.image_id is not None else Path(view.key).name
    prompt = "".join(f'<div class="prompt"><b>{html.escape(t)} prompt:</b> {html.escape(p)}</div>' for t, p in view.prompts.items())
    caps = "".join(_caption_block(c) for c in view.captions)
    answers = ""
    if view.answers:
        rows = "".join(_answer_row(a) for a in view.answers)
        answers = (
            '<table class="pope"><tr><th>method</th><th>question</th><th>answer</th><th>parsed</th><th>label</th><th></th></tr>'
            f"{rows}</table>"
        )
    return (
        f'<section class="image" data-hall="{1 if view.has_hallucination else 0}">'
        f'<div class="pic">{img}<div class="name">{html.escape(title)}</div></div>'
        f'<div class="body">{prompt}{caps}{answers}</div></section>'
    )


CSS = """
body{font-family:sans-serif;margin:16px;color:#222}
header{position:sticky;top:0;background:#fff;padding:8px 0;border-bottom:1px solid #ccc;z-index:1}
section.image{display:flex;gap:16px;border-bottom:1px solid #ddd;padding:12px 0}
.pic img{max-width:336px;display:block}.pic .name{font-size:12px;color:#666}
.body{flex:1}.cap{margin:6px 0;padding:6px;border-left:3px solid #bbb}
.method{font-weight:bold}.counts,.note{font-size:12px;color:#666}
mark{color:#fff;padding:1px 3px;border-radius:2px}
mark.hallucinated{background:%(hallucinated)s}mark.correct{background:%(correct)s}
.missed{background:%(missed)s;color:#fff;padding:1px 3px;margin:0 2px;border-radius:2px}
table.pope{border-collapse:collapse;font-size:13px;margin-top:6px}table.pope td,table.pope th{border:1px solid #ccc;padding:2px 6px}
tr.right .verdict{color:%(correct)s}tr.wrong .verdict{color:%(hallucinated)s;font-weight:bold}
.legend span{margin-right:10px}.err{color:#a00}.hidden{display:none!important}
.vs .body{display:grid;grid-template-columns:1fr 1fr;gap:8px;align-content:start}
.vs .prompt,.vs table.pope{grid-column:1/3}
"""

JS = """
function apply(){
  var only=document.getElementById('only').checked;
  var a=document.getElementById('ma').value, b=document.getElementById('mb').value;
  var vs=a!=='' && b!=='';
  document.body.classList.toggle('vs', vs);
  document.querySelectorAll('section.image').forEach(function(sec){
    var shown=0;
    sec.querySelectorAll('.cap').forEach(function(c){
      var m=c.getAttribute('data-method');
      var ok=(!vs || m===a || m===b) && (!only || c.getAttribute('data-hall')==='1');
      c.classList.toggle('hidden', !ok); if(ok) shown++;
    });
    sec.querySelectorAll('tr.ans').forEach(function(r){
      var m=r.getAttribute('data-method');
      var ok=(!vs || m===a || m===b) && !only;
      r.classList.toggle('hidden', !ok); if(ok) shown++;
    });
    sec.classList.toggle('hidden', shown===0);
  });
}
// The filters can be given in the address too (a link to a view): #only&a=<method>&b=<method>
function fromHash(){
  var h=decodeURIComponent(location.hash.replace(/^#/, '')); if(!h) return;
  h.split('&').forEach(function(kv){
    var i=kv.indexOf('='), k=i<0?kv:kv.slice(0,i), v=i<0?'':kv.slice(i+1);
    if(k==='only') document.getElementById('only').checked=true;
    if(k==='a') document.getElementById('ma').value=v;
    if(k==='b') document.getElementById('mb').value=v;
  });
}
document.addEventListener('DOMContentLoaded', function(){
  ['only','ma','mb'].forEach(function(id){document.getElementById(id).addEventListener('change', apply);});
  fromHash(); apply();
});
"""


def render_html(browse: Browse, title: str = "vh_bench run browser") -> str:
    methods = sorted({c.method for v in browse.images for c in v.captions} | {a.method for v in browse.images for a in v.answers})
    options = '<option value="">all</option>' + "".join(f'<option value="{html.escape(m)}">{html.escape(m)}</option>' for m in methods)
    legend = (
        f'<span class="legend"><mark class="hallucinated">hallucinated</mark> <mark class="correct">correct</mark> '
        f'<span class="missed">ground truth missed</span></span>'
    )
    runs = "".join(
        f"<li>{html.escape(r['method'])} on {html.escape(r['dataset'])}: {r['n']} samples "
        f"<code>{html.escape(r['run_dir'])}</code></li>"
        for r in browse.runs
    )
    controls = (
        f'<label><input type="checkbox" id="only"> only captions with hallucinations</label> '
        f'&nbsp; compare <select id="ma">{options}</select> vs <select id="mb">{options}</select> {legend}'
    )
    body = "".join(_image_block(v) for v in browse.images)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS % COLOURS}</style><script>{JS}</script></head><body>"
        f"<header><h1>{html.escape(title)}</h1><details><summary>{len(browse.runs)} runs, {len(browse.images)} images</summary><ul>{runs}</ul></details>"
        f"{controls}</header>{body}</body></html>\n"
    )


ANSI = {HALLUCINATED: "\033[1;97;41m", CORRECT: "\033[1;97;42m", "missed": "\033[1;97;44m", "reset": "\033[0m"}


def marked_text(cap: CaptionView, colour: bool) -> str:
    out, at = [], 0
    for m in sorted(cap.marks, key=lambda m: m.start):
        out.append(cap.text[at : m.start])
        word = cap.text[m.start : m.end]
        if colour:
            out.append(f"{ANSI[m.kind]}{word}{ANSI['reset']}")
        else:
            out.append(f"[{'!' if m.kind == HALLUCINATED else '+'}{word}]")
        at = m.end
    out.append(cap.text[at:])
    return "".join(out)


def render_text(browse: Browse, *, colour: bool = False, only_hallucinated: bool = False,
                methods: tuple[str, ...] = ()) -> str:  # fmt: skip
    """The page as text: `[!word]` hallucinated, `[+word]` correct (colours on a terminal)."""
    lines = ["legend: [!hallucinated] [+correct]  missed: ground-truth objects the caption never names", ""]
    for view in browse.images:
        caps = [c for c in view.captions if (not methods or c.method in methods) and (not only_hallucinated or c.hallucinated)]
        answers = [] if only_hallucinated else [a for a in view.answers if not methods or a.method in methods]
        if not caps and not answers:
            continue
        title = f"image {view.image_id}" if view.image_id is not None else Path(view.key).name
        lines.append(f"== {title}  ({view.key})")
        for task, prompt in view.prompts.items():
            lines.append(f"   {task} prompt: {prompt}")
        for c in caps:
            if c.error:
                lines.append(f"   {c.method}: error: {c.error}")
                continue
            lines.append(f"   {c.method}: {marked_text(c, colour)}")
            if c.missed:
                missed = ", ".join(c.missed)
                lines.append(f"      missed: {ANSI['missed'] + missed + ANSI['reset'] if colour else missed}")
        for a in answers:
            mark = "right" if a.right else "WRONG"
            lines.append(f"   {a.method}: {a.question!r} -> {a.answer!r} (parsed {a.predicted}, label {a.label}) {mark}")
        lines.append("")
    return "\n".join(lines)
