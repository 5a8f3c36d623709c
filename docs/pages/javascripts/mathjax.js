// MathJax 3 configuration for pymdownx.arithmatex (generic mode) and for the rendered notebooks.
// Arithmatex wraps TeX in elements of class "arithmatex" as \( ... \) and \[ ... \]; notebook Markdown
// cells keep their $ ... $ and $$ ... $$. Everything else on a page is left alone.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex|jp-MarkdownOutput|jp-RenderedMarkdown",
  },
};

// Material's instant navigation swaps page content without a reload: typeset again each time.
document$.subscribe(() => {
  if (window.MathJax && MathJax.typesetPromise) {
    MathJax.startup.output.clearCache();
    MathJax.typesetClear();
    MathJax.texReset();
    MathJax.typesetPromise();
  }
});
