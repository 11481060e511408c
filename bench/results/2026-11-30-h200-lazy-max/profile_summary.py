import csv,sys,collections
f=sys.argv[1]
lines=open(f).read().splitlines()
rows=list(csv.reader(lines[1:]))
hdr=rows[0]; rows=rows[1:]
ix={h:i for i,h in enumerate(hdr)}
stall_cols=[h for h in hdr if h.startswith('stall_') and '(Not Issued)' not in h]
def num(v):
    try: return float(v.replace(',',''))
    except: return 0.0
ins=[]
for r in rows:
    src=r[ix['Source']].strip()
    s=num(r[ix['Warp Stall Sampling (All Samples)']])
    ex=num(r[ix['Instructions Executed']])
    st={c:num(r[ix[c]]) for c in stall_cols}
    ins.append((src,s,ex,st))
tot=sum(i[1] for i in ins)
print('instructions',len(ins),'samples',tot)
# regions: find SETMAXNREG positions
for k,i in enumerate(ins):
    if 'SETMAXNREG' in i[0] or 'WARPGROUP' in i[0] and False: print(k,i[0])
agg=collections.Counter()
for i in ins:
    for c,v in i[3].items(): agg[c]+=v
print('stall totals:',[(c,round(100*v/tot,1)) for c,v in agg.most_common(12)])
# opcode mix in samples
op=collections.Counter(); opx=collections.Counter()
for i in ins:
    o=i[0].split()[0] if i[0] else ''
    if o.startswith('@'): o=i[0].split()[1]
    o=o.split('.')[0]
    op[o]+=i[1]; opx[o]+=i[2]
print('samples by opcode:',[(o,round(100*v/tot,1)) for o,v in op.most_common(15)])
print('executed warp-instr by opcode:',[(o,int(v)) for o,v in opx.most_common(20)])
print()
top=sorted(range(len(ins)),key=lambda k:-ins[k][1])[:40]
for k in sorted(top):
    i=ins[k]; st=sorted(i[3].items(),key=lambda kv:-kv[1])[:3]
    print('%5d %5.2f%% ex=%9d  %-60s %s'%(k,100*i[1]/tot,i[2],i[0][:60],' '.join('%s:%.0f'%(c[6:],v) for c,v in st)))
print()
marks=[k for k,i in enumerate(ins) if 'SETMAXNREG' in i[0] or 'EXIT' in i[0]]
print('marks',[(k,ins[k][0][:40]) for k in marks])
print([(k,ins[k][0][:50]) for k,i in enumerate(ins) if 'MAXREG' in i[0]])
def region(a,b,name):
    s=sum(ins[k][1] for k in range(a,b)); agg=collections.Counter()
    if s == 0: print(name,a,b,'no samples'); return
    for k in range(a,b):
        for c,v in ins[k][3].items(): agg[c]+=v
    print(name,a,b,'%.1f%%'%(100*s/tot),[(c[6:],round(100*v/s,1)) for c,v in agg.most_common(8)])
import os
cuts=[int(x) for x in os.environ.get('CUTS','0').split(',')]+[len(ins)]
for a,b in zip(cuts,cuts[1:]): region(a,b,'region')
