"""The compression report: what each stage did, layer by layer, as Markdown and one HTML page.

:func:`write_report` takes the result of :func:`optimizer.compress` and, optionally, the native
export report, a runtime profile, benchmark rows and int8 diagnostics, and writes
``report.md``, a self-contained ``report.html`` and the plots as PNG files. Example::

    result = optimizer.compress(model, "default", train_loader, test_loader)
    paths = optimizer.report.write_report(result, "out/report", example_inputs=(x,))
    print(paths.html, paths.absent)
"""

from optimizer.report.writer import ReportPaths, write_report

__all__ = ["ReportPaths", "write_report"]
