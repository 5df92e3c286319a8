"""Chart defects a browser can see (issue 15), checked in the page's DOM on every drawn plotly chart:
overlapping titles (chart, subplot and axis titles, annotations, the legend) and point labels, text cut off at the
chart's edge, ranked bar charts whose category axis labels fewer ticks than there are bars, and
numbers shown with an SI suffix (plotly's "~s" format: 774.69f, 1.2k), which nats never take.

Used by bench/screenshots.py: `defects(tab)` returns one sentence per defect found on the page shown.
"""

from __future__ import annotations

# Runs in the page. Text boxes are the getBoundingClientRect of plotly's SVG text nodes; a chart's
# frame is its outer .main-svg. Categories of a bar trace come from plotly's own _fullData.
CHECK = r"""() => {
  const out = [];
  const SI = /(^|[^\w.])[-−]?\d+(\.\d+)?[yzafpnµumkMGTPE](?![A-Za-z])/;
  const box = e => e.getBoundingClientRect();
  const hit = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1 &&
                        Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  const name = e => (e.textContent || "").trim().slice(0, 40);
  document.querySelectorAll("[data-testid='stPlotlyChart']").forEach((chart, i) => {
    const gd = chart.querySelector(".js-plotly-plot");
    const svg = chart.querySelector(".main-svg");
    if (!gd || !svg) return;
    const title = (gd.querySelector(".gtitle") || {}).textContent || `chart ${i + 1}`;
    const where = `chart ${i + 1} ("${title.trim().slice(0, 50)}")`;
    const frame = box(svg);
    const titles = [...gd.querySelectorAll(".gtitle, .annotation-text, .g-xtitle text, .g-ytitle text, " +
                                            "[class*='g-x'][class$='title'] text, [class*='g-y'][class$='title'] text")]
      .filter(e => name(e) && box(e).width > 0);
    const legend = gd.querySelector(".legend");
    const boxes = titles.map(e => [name(e), box(e)]);
    if (legend && box(legend).width > 0) boxes.push(["legend", box(legend)]);
    for (let a = 0; a < boxes.length; a++)
      for (let b = a + 1; b < boxes.length; b++)
        if (boxes[a][0] !== boxes[b][0] && hit(boxes[a][1], boxes[b][1]))
          out.push(`${where}: "${boxes[a][0]}" overlaps "${boxes[b][0]}"`);
    const points = [...gd.querySelectorAll(".textpoint text")].filter(e => name(e) && box(e).width > 0);
    for (let a = 0; a < points.length; a++)
      for (let b = a + 1; b < points.length; b++)
        if (hit(box(points[a]), box(points[b])))
          out.push(`${where}: point labels "${name(points[a])}" and "${name(points[b])}" overlap`);
    const texts = [...gd.querySelectorAll(".main-svg text")].filter(e => name(e) && box(e).width > 0);
    for (const e of texts) {
      const r = box(e);
      if (r.left < frame.left - 1 || r.right > frame.right + 1 || r.top < frame.top - 1 || r.bottom > frame.bottom + 1)
        out.push(`${where}: "${name(e)}" is cut off at the chart's edge`);
      if (SI.test(e.textContent)) out.push(`${where}: "${name(e)}" shows an SI suffix`);
    }
    for (const t of gd._fullData || []) {
      if (t.type !== "bar" || t.visible !== true) continue;
      const horizontal = t.orientation === "h";
      const cats = horizontal ? t.y : t.x;
      if (!cats || !cats.length || typeof cats[0] === "number") continue;  // not a ranked, categorical bar chart
      // Shared axes draw their ticks on one subplot only: the most labels on any axis of that direction.
      const letter = horizontal ? "y" : "x";
      const perAxis = {};
      gd.querySelectorAll(`.${letter}axislayer-above text`).forEach(e => {
        const cls = [...e.parentNode.classList].find(c => c.endsWith("tick")) || "?";
        if (name(e)) perAxis[cls] = (perAxis[cls] || 0) + 1;
      });
      const ticks = Math.max(0, ...Object.values(perAxis));
      const n = new Set(cats).size;
      if (ticks < n) out.push(`${where}: ${ticks} of ${n} bars labelled ("${t.name || "bars"}")`);
    }
  });
  document.querySelectorAll("[data-testid='stMetricValue']").forEach(e => {
    if (SI.test(e.textContent)) out.push(`metric "${name(e)}" shows an SI suffix`);
  });
  return [...new Set(out)];
}"""


def defects(tab) -> list[str]:
    """Every defect CHECK finds on the page shown in `tab` (a Playwright page)."""
    return tab.evaluate(CHECK)
