"""The report's HTML page: its sections in one template, plotly.js inlined once, nothing fetched when it is viewed."""

from __future__ import annotations

import html
import string
from collections.abc import Sequence

import plotly.offline

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2328;
       background: #f6f8fa; }
header { background: #24292f; color: #fff; padding: 16px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 22px; }
header p { margin: 0; color: #d0d7de; font-size: 14px; }
nav { padding: 8px 32px; background: #fff; border-bottom: 1px solid #d0d7de; font-size: 14px; }
nav a { margin-right: 16px; color: #0969da; text-decoration: none; }
main { padding: 8px 32px 32px 32px; max-width: 1400px; }
section { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 20px 16px 20px;
          margin: 16px 0; }
h2 { font-size: 18px; border-bottom: 1px solid #d0d7de; padding-bottom: 6px; }
h3 { font-size: 15px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 12px; background: #f6f8fa; padding: 1px 4px; border-radius: 4px; word-break: break-all; }
.note { color: #57606a; font-size: 13px; }
.warn { color: #9a6700; font-weight: 600; }
.bad { color: #cf222e; font-weight: 600; }
.ok { color: #1a7f37; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; }
.grid > div { min-width: 0; overflow: hidden; }
.map { display: grid; grid-template-columns: minmax(0, 1fr) 240px; gap: 16px; align-items: start; }
.map > .plot { min-width: 0; overflow: hidden; }
.hover-card { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px; font-size: 13px;
              min-height: 120px; word-break: break-word; }
.hover-card img { max-width: 200px; image-rendering: auto; display: block; margin-bottom: 6px; }
img.thumb { width: 48px; height: 48px; object-fit: cover; border-radius: 3px; vertical-align: middle; }
ol.neighbours { margin: 4px 0 12px 0; padding-left: 24px; font-size: 13px; }
ol.neighbours li { margin: 2px 0; }
.row-query { font-size: 14px; margin-top: 12px; }
details pre { font-size: 12px; background: #f6f8fa; padding: 8px; overflow-x: auto; }
"""

# The map's hover card: the hovered point's id, text and thumbnail (Plotly's hover label holds text only).
_SCRIPT = """
document.querySelectorAll('.map').forEach(function (box) {
  var plot = box.querySelector('.plotly-graph-div');
  var card = box.querySelector('.hover-card');
  if (!plot || !card || !plot.on) { return; }
  plot.on('plotly_hover', function (event) {
    var point = event.points[0];
    var data = point.customdata || [];
    card.textContent = '';
    if (data[2]) {
      var image = document.createElement('img');
      image.src = data[2];
      image.alt = 'thumbnail';
      card.appendChild(image);
    }
    var id = document.createElement('strong');
    id.textContent = new DOMParser().parseFromString(data[0] || '', 'text/html').documentElement.textContent;
    card.appendChild(id);
    var text = document.createElement('div');
    text.textContent = new DOMParser().parseFromString(data[1] || '', 'text/html').documentElement.textContent;
    card.appendChild(text);
  });
});
"""

_PAGE = string.Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; \
style-src 'unsafe-inline'; img-src data: blob:; font-src data:">
<title>$title</title>
<style>$style</style>
<script>$plotlyjs</script>
</head>
<body>
<header><h1>$title</h1><p>$subtitle</p></header>
<nav>$nav</nav>
<main>
$sections
</main>
<script>$script</script>
</body>
</html>
""")


def render(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole page.

    Args:
      title: the page's title (plain text; escaped here).
      subtitle: a line under it (plain text; escaped here).
      sections: (anchor id, navigation label, the section's HTML) for each section, in order; the HTML is
        put in as is, so its builder escapes what it shows.
    """
    nav = " ".join(f'<a href="#{html.escape(anchor)}">{html.escape(label)}</a>' for anchor, label, _ in sections)
    return _PAGE.substitute(
        title=html.escape(title),
        subtitle=html.escape(subtitle),
        style=_STYLE,
        plotlyjs=plotly.offline.get_plotlyjs(),
        nav=nav,
        sections="\n".join(body for _, _, body in sections),
        script=_SCRIPT,
    )
