"""The schema of a split client's replies, checked before the server uses them."""

from fedfuse.api import EVAL_KEY


def check_shared(sent, reply, config) -> None:
    """The schema of a split client's replies (``ProtocolSpec.reply_check``): the images it
    noised to the cut are float32 images, ``share_size`` of them when it shares a subset, one
    batch per local step when it shares its batches; each with one condition when the models
    are conditioned; its finished samples are as many as the server asked for."""
    if "shared" in reply:
        x = reply["shared"]["x_cut"]
        n = config.share_size if config.share == "subset" else config.local_steps * config.recipe.batch_size
        poisson = "config" in sent and sent["config"].get("poisson", False)  # DP: n on average, at most 4n
        if len(x.shape) != 4 or str(x.dtype) != "float32" or not (0 < x.shape[0] <= 4 * n if poisson else x.shape[0] == n):
            raise ValueError(f"'shared/x_cut' is {tuple(x.shape)} {x.dtype}; expected {'about ' * poisson}{n} "
                             "float32 images")
        n = x.shape[0]
        conditioned = config.condition != "none"
        if ("cond" in reply["shared"]) != conditioned:
            raise ValueError(f"'shared/cond' is {'missing' if conditioned else 'sent'}; the models are "
                             f"{'conditioned' if conditioned else 'unconditional'}")
        if conditioned and tuple(reply["shared"]["cond"].shape) != (n,):
            raise ValueError(f"'shared/cond' has shape {tuple(reply['shared']['cond'].shape)}; expected ({n},)")
    if EVAL_KEY in reply and "config" in sent and "n" in sent["config"]:
        x0 = reply[EVAL_KEY]["x0"]
        if len(x0.shape) != 4 or x0.shape[0] != int(sent["config"]["n"]):
            raise ValueError(f"'{EVAL_KEY}/x0' is {tuple(x0.shape)}; the server asked for {int(sent['config']['n'])} images")
