def triage(report, **kw): raise NotImplementedError
def triage_main(argv): raise NotImplementedError
