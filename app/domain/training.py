"""Training loops (cancer-specific ABMIL and merge jobs). CONTRACT STUB — to be implemented.

Public API (keep these names and signatures; others depend on them):

    @dataclass TrainConfig(epochs=20, lr=1e-4, weight_decay=1e-5, accum=16, warmup_epochs=1, seed=42,
                           max_patches=None, grad_clip=None, device="cpu")
    @dataclass Progress(epoch, epochs, step, total_steps, loss, elapsed_s, eta_s)
    class TrainingCancelled(Exception)
    @dataclass TrainResult(steps, final_loss, history: list[float])   # history = mean loss per epoch

    train(model: SurvivalModel, samples: Samples, config: TrainConfig, *,
          progress: Callable[[Progress], None] | None = None,
          should_cancel: Callable[[], bool] | None = None) -> TrainResult
        AdamW over model.trainable_parameters() (no weight decay on biases/1-D params), one optimiser step per
        `accum` bags (loss = mean over the group of NLL + aux_loss), cosine schedule with `warmup_epochs` of
        linear warm-up, deterministic for config.seed (shuffle order and dropout). Calls should_cancel between
        steps and raises TrainingCancelled. Leaves the model in eval mode.

    train_cancer_specific(base: StateDict, samples, config, *, dims, bin_edges, progress=None,
                          should_cancel=None) -> StaticModel      # full ABMIL trained from θ₀
"""
