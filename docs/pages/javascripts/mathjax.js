// MathJax 3 configuration for pymdownx.arithmatex (generic mode) and for the rendered notebooks.
// Arithmatex wraps TeX in elements of class "arithmatex" as \( ... \) and \[ ... \]; notebook Markdown
// cells keep their $ ... $ and $$ ... $$, so the whole page is searched (MathJax skips code and pre).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: "tex2jax_ignore",
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
