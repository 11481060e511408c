import struct, sys, statistics as st
def q(v, ps=(0, 50, 100)):
    v = sorted(v)
    return '/'.join('%.2f' % v[min(len(v) - 1, int(p / 100 * (len(v) - 1) + 0.5))] for p in ps)
for fn in sys.argv[1:]:
    b = open(fn, 'rb').read()
    w = struct.unpack('<%dQ' % (len(b) // 8), b)
    na, nc, kern = w[0], w[1], w[2]
    A = [w[4 + 8 * i: 12 + 8 * i] for i in range(na)]
    C = [w[4 + 8 * (na + i): 12 + 8 * (na + i)] for i in range(nc)]
    A = [a for a in A if a[0] and a[5]]
    t0 = min(a[0] for a in A)
    us = lambda x: (x - t0) / 1000.0
    ghz = st.median([(a[4] - a[1]) / (a[5] - a[0]) for a in A if a[5] > a[0]])
    print(f'== {fn}: kernel {kern}, {na} attention blocks ({len(A)} stamped), {nc} combine blocks; SM clock ~{ghz:.2f} GHz')
    print(f'  attention start  (us from first start, min/med/max): {q([us(a[0]) for a in A])}')
    print(f'  attention end    : {q([us(a[5]) for a in A])}')
    if kern != 0:
        print(f'  start->data (us) : {q([(a[2]-a[1])/ghz/1000 for a in A])}')
        print(f'  data->loop end   : {q([(a[3]-a[2])/ghz/1000 for a in A])}  tiles {q([a[7] for a in A])}')
        per = [((a[3]-a[2])/a[7])/ghz/1000 for a in A if a[7] > 1]
        if per: print(f'  loop per tile(us): {q(per)}')
        print(f'  finish rows      : {q([(a[4]-a[3])/ghz/1000 for a in A])}')
    print(f'  block span (us)  : {q([(a[5]-a[0])/1000 for a in A])}')
    sms = {}
    for a in A: sms[a[6]] = sms.get(a[6], 0) + 1
    print(f'  SMs used {len(sms)}, blocks per SM min/max {min(sms.values())}/{max(sms.values())}')
    C = [c for c in C if c[0] and c[5]]
    if C:
        print(f'  combine start    : {q([us(c[0]) for c in C])}')
        print(f'  combine after wait: {q([us(c[3]) for c in C])}')
        print(f'  combine end      : {q([us(c[5]) for c in C])}')
        print(f'  total span first attention start -> last combine end: {max(us(c[5]) for c in C):.2f} us')
    else:
        print(f'  total span: {max(us(a[5]) for a in A):.2f} us')
