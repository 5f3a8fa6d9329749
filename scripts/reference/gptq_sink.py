#!/usr/bin/env python3
"""Where 3-bit GPTQ without act-order loses: per layer, the attention the
later tokens give position 0 (the sink), and the relative error of the v
projection output at position 0 and elsewhere, for two databases (GPTQ, RTN).

    python scripts/reference/gptq_sink.py GPTQ_DB RTN_DB
"""
import sys, json, torch, pathlib
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parent))
import gptq_reference as g
tok, model = g.load_model(); model.set_attn_implementation("eager")
evo_g, evo_r = g.load_db(sys.argv[1]), g.load_db(sys.argv[2])
held = g.read_text_tokens(tok, str(g.ROOT / 'assets/text/sotu/eval'), 1024)
xs = {}
hs=[]
for li, layer in enumerate(model.model.layers):
    def hook(_m, inp, _o, li=li): xs[li] = inp[0].detach()[0]
    hs.append(layer.self_attn.v_proj.register_forward_hook(hook))
with torch.no_grad():
    out = model(torch.tensor([held[:512]]), output_attentions=True)
for h in hs: h.remove()
for li in [0,1,2,5,10,15,20,25,29]:
    x = xs[li]
    w = model.model.layers[li].self_attn.v_proj.weight
    y = x @ w.T
    att = out.attentions[li][0]  # heads, T, T
    sinkmass = float(att[:, 100:, 0].mean())
    def rel(wq, sl):
        return float(((x[sl] @ (w - wq).T).norm(dim=-1) / (y[sl].norm(dim=-1)+1e-9)).mean())
    print(f"L{li:02} |x0|={x[0].norm():7.2f} |x_rest|={x[1:].norm(dim=-1).mean():6.2f} |y0|={y[0].norm():6.3f} |y_rest|={y[1:].norm(dim=-1).mean():6.3f} attn->0 {sinkmass:.2f}"
          f"  relerr pos0 gptq {rel(evo_g[(li,'v')], slice(0,1)):.3f} rtn {rel(evo_r[(li,'v')], slice(0,1)):.3f}"
          f"  rest gptq {rel(evo_g[(li,'v')], slice(1,None)):.3f} rtn {rel(evo_r[(li,'v')], slice(1,None)):.3f}")
