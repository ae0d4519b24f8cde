# Explanations of the trimodal TGMM (paper §5.5, Figs. 8-9; models/explain/): attention matrices over the
# specific and shared features, lab-text token attributions and sentence occlusion, Grad-CAM++ over ECG leads x time
# and echo views x frames, occlusion over ECG time and of whole ECG waves (P, QRS, T).


rule explain:
    input:
        unpack(explain_inputs),
        code=library_code("explain.py"),
    output:
        attention=OUT / "eval/explain/attention.parquet",
        attention_png=[
            report(
                OUT / f"eval/explain/attention_{task}.png",
                caption="../report/explain_attention.rst",
                category="4. Explanations",
                labels={"figure": f"attention, {task}"},
            )
            for task in explain_tasks()
        ],
        text_tokens=OUT / "eval/explain/text_tokens.parquet",
        text_html=per_patient_report(
            OUT / "eval/explain/text_attributions.html",
            caption="../report/explain_text.rst",
            category="4. Explanations",
            labels={"figure": "lab-text tokens (HTML)"},
        ),
        text_png=per_patient_report(
            OUT / "eval/explain/text_attributions.png",
            caption="../report/explain_text.rst",
            category="4. Explanations",
            labels={"figure": "lab-text tokens"},
        ),
        ecg=OUT / "eval/explain/ecg_gradcam.parquet",
        ecg_png=per_patient_report(
            OUT / "eval/explain/ecg_gradcam.png",
            caption="../report/explain_ecg.rst",
            category="4. Explanations",
            labels={"figure": "Grad-CAM++, ECG"},
        ),
        ecg_occlusion=OUT / "eval/explain/ecg_occlusion.parquet",
        ecg_occlusion_png=per_patient_report(
            OUT / "eval/explain/ecg_occlusion.png",
            caption="../report/explain_ecg_occlusion.rst",
            category="4. Explanations",
            labels={"figure": "occlusion, ECG"},
        ),
        ecg_waves=OUT / "eval/explain/ecg_waves.parquet",
        ecg_waves_png=report(
            OUT / "eval/explain/ecg_waves.png",
            caption="../report/explain_ecg_waves.rst",
            category="4. Explanations",
            labels={"figure": "wave occlusion, ECG"},
        ),
        text_sentences=OUT / "eval/explain/text_sentences.parquet",
        echo=OUT / "eval/explain/echo_gradcam.parquet",
        echo_png=per_patient_report(
            OUT / "eval/explain/echo_gradcam.png",
            caption="../report/explain_echo.rst",
            category="4. Explanations",
            labels={"figure": "Grad-CAM++, echo"},
        ),
    params:
        out_dir=OUT,
        model=model_params(),
        optim=config["train"]["optim"],
        work_dirs={task: str(OUT / f"train/{task}/lab+ecg+echo") for task in explain_tasks()},
        patients=config["explain"]["patients"],
        ig_steps=config["explain"]["ig_steps"],
        ecg_fs=config["ecg"]["target_fs"],
    log:
        OUT / "logs/eval/explain.log",
    benchmark:
        OUT / "benchmarks/eval/explain.tsv"
    threads: config["train"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,  # minutes
    conda:
        "../../envs/train.yaml"
    script:
        "../scripts/explain.py"
