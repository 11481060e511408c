import gzip, numpy as np, sys
for w in sys.argv[1:]:
    b=np.frombuffer(gzip.open(f't_{w}.bin.blocks.gz').read(),dtype=np.uint64).reshape(-1,4).astype(np.int64)
    n=len(b); start,qr,end,sm=b[:,0],b[:,1],b[:,2],b[:,3]
    dur=end-start; startup=qr-start
    gaps=[]; per_sm_busy=[]; per_sm_span=[]
    for s in np.unique(sm):
        idx=np.where(sm==s)[0]; idx=idx[np.argsort(start[idx])]
        g=start[idx[1:]]-end[idx[:-1]]
        gaps+=list(g)
        per_sm_busy.append(dur[idx].sum()); per_sm_span.append(end[idx].max()-start[idx].min())
    gaps=np.array(gaps)
    tot_span=np.max(per_sm_span)
    print(f"{w}: {n} blocks; item clocks median {np.median(dur):.0f}; Q-ready after start median {np.median(startup):.0f} (first wave {np.median(startup[:132]):.0f}, later {np.median(startup[132:]):.0f}); gap between blocks on an SM median {np.median(gaps):.0f} p90 {np.percentile(gaps,90):.0f}")
    print(f"   per SM: span max {tot_span}, busy mean {np.mean(per_sm_busy):.0f} ({np.mean(per_sm_busy)/tot_span*100:.1f}% of the longest span), span min {np.min(per_sm_span)} ; sum startup / sum dur = {startup[132:].sum()/dur[132:].sum()*100:.1f}% ; gaps/total busy {gaps.sum()/np.sum(per_sm_busy)*100:.1f}%")
