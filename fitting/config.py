"""Every setting of the reconstruction, as nested dataclasses (``configs/fitting.yaml`` mirrors them).

:class:`FittingConfig` is the schema of ``run_rgb_fitting.sh`` / ``python -m
fitting.run``; its members configure one stage each and are also the schemas
of the commands that run a stage alone (:class:`PreprocessConfig` for
``python -m fitting.preprocess``, ``configs/preprocess.yaml``). Defaults are
written once, here; ``tests/test_configs.py`` checks that each YAML file
holds exactly these keys and values, and the commands' ``--help`` texts read
their defaults from these classes. This module imports no torch.

A field documented as "'' means ..." is derived when the run starts, and the
``config.yaml`` saved beside a run's outputs holds the derived value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.config import RenderSettings
from utils.image_io import DEFAULT_MAX_PIXELS

__all__ = [
    "DETECTOR_METHODS",
    "LANDMARK_METHODS",
    "MASK_METHODS",
    "OptimConfig",
    "PreprocessConfig",
    "LandmarkFitConfig",
    "PhotometricShapeConfig",
    "ShapeFitConfig",
    "GlassesConfig",
    "UnwrapConfig",
    "AlbedoFitConfig",
    "DetailFitConfig",
    "OutputConfig",
    "FittingConfig",
    "RenderConfig",
]


#: Values of :attr:`PreprocessConfig.detector`, :attr:`~PreprocessConfig.landmarks` and :attr:`~PreprocessConfig.masks`.
DETECTOR_METHODS = ("auto", "hog", "cnn", "mediapipe")
LANDMARK_METHODS = ("facemesh", "dlib", "fan")
MASK_METHODS = ("auto", "parsing", "landmarks")


@dataclass
class OptimConfig:
    """Settings of one gradient-based optimisation (:func:`fitting.optim.minimize`).

    Attributes:
        steps: number of Adam steps.
        rampdown: fraction of the run over which the learning rate decays to 0
            at the end (cosine; 0 keeps it constant).
        max_recoveries: non-finite events tolerated (each restores the last
            good state and halves the learning rate).
    """

    steps: int = 100
    rampdown: float = 0.25
    max_recoveries: int = 5


@dataclass
class PreprocessConfig:
    """Detection, landmarks, alignment and masks (:mod:`fitting.preprocess`).

    Attributes:
        detector: ``auto`` (HOG, then the slower CNN if HOG finds nothing, then
            MediaPipe's detectors; with ``all_faces`` all of them, merged),
            ``hog``, ``cnn`` or ``mediapipe``.
        landmarks: ``facemesh`` (MediaPipe FaceMesh's 478 points, the iBUG-68
            set taken from them; dlib's 68-point predictor where FaceMesh finds
            no face), ``dlib`` or ``fan`` (face-alignment, only with its weights
            already on this machine).
        facemesh_table: the FaceMesh -> iBUG-68 table; '' means the project's
            ``checkpoints/default/facemesh_ibug68.npz``.
        masks: ``auto`` (BiSeNet when its checkpoint is present, else
            landmarks), ``parsing`` or ``landmarks``.
        all_faces: process every face large enough, as ``<name>_face<k>``;
            otherwise only the largest.
        min_face_size: smallest face accepted: the detector box's side
            (geometric mean of width and height) in photo pixels.
        max_image_side: detection runs on a copy whose longer side is at most this.
        max_upsample: most HOG upsampling steps for small faces.
        fallback_threshold: last-resort HOG threshold (see :mod:`fitting.preprocess.detection`).
        fallback_min_relative_size: smallest box of that last resort, relative to the image.
        max_pixels: images with more pixels are refused before decoding.
        reference_template: the reference's ``topo_assets/similarity_Lm3D_all.mat``;
            '' means the built-in ICT-FaceKit template.
        checkpoints_dir: folder of the official checkpoints (``parsing_model/``,
            ``dlib_model/``); '' means the run's ``checkpoints_dir`` (``checkpoints``
            when preprocessing alone).
        device: torch device of BiSeNet and FAN; '' means the run's ``device``
            (``cpu`` when preprocessing alone).
        overwrite: reprocess images whose output exists.
        visualise: write ``vis/<name>.png``.
    """

    detector: str = "auto"
    landmarks: str = "facemesh"
    facemesh_table: str = ""
    masks: str = "auto"
    all_faces: bool = False
    min_face_size: int = 40
    max_image_side: int = 1600
    max_upsample: int = 2
    fallback_threshold: float = -0.65
    fallback_min_relative_size: float = 0.33
    max_pixels: int = DEFAULT_MAX_PIXELS
    reference_template: str = ""
    checkpoints_dir: str = ""
    device: str = ""
    overwrite: bool = False
    visualise: bool = True


@dataclass
class LandmarkFitConfig:
    """The Levenberg-Marquardt landmark fit (:mod:`fitting.landmark_fit`).

    Attributes:
        rigid_iterations: pose-only iterations before the full fit.
        iterations: full iterations (pose, identity, expression).
        identity_prior: weight of sum(identity^2), in squared pixels per unit.
        expression_prior: weight of sum(expression^2).
        robust_scale: Cauchy scale in pixels (inf: plain least squares).
        weights: per-group landmark weights (jaw, brows, nose, eyes, mouth, inner_mouth).
        sliding_contour: let the sparse jaw landmarks slide to the silhouette.
        contour_band: half-height (model units) of the band of candidate vertices.
        damping: initial Levenberg-Marquardt damping.
        dense_weight: total weight of a face's dense points, as a multiple of the
            68 sparse points' total (they are many and their errors correlated).
        visibility_cos: a dense point's weight falls from 1 to 0 as the cosine
            between its normal and the direction to the camera drops from this to 0.
    """

    rigid_iterations: int = 8
    iterations: int = 30
    identity_prior: float = 2.0
    expression_prior: float = 4.0
    robust_scale: float = 4.0
    weights: dict = field(
        default_factory=lambda: {"jaw": 0.5, "brows": 1.0, "nose": 2.0, "eyes": 2.0, "mouth": 1.5, "inner_mouth": 1.5}
    )
    sliding_contour: bool = True
    contour_band: float = 0.35
    damping: float = 1e-2
    dense_weight: float = 2.0
    visibility_cos: float = 0.3


@dataclass
class PhotometricShapeConfig:
    """Photometric refinement of shape, pose and lighting (second half of stage 1).

    Attributes:
        optim: steps and schedule (``steps: 0`` skips the refinement).
        lr_identity, lr_expression, lr_angles, lr_gamma, lr_proxy: Adam learning rates
            (coefficient units, radians, SH units, albedo units).
        lr_translation_m: translation learning rate in metres (converted to model units).
        proxy_resolution: side of the UV albedo proxy (smooth colour only, so
            shading is explained by lighting and geometry).
        symmetric_proxy: tie each proxy texel to its mirror across the face's
            symmetry plane, so a left-right brightness difference can only be
            explained by the light (directional light is not symmetric; the
            skin's smooth colour nearly is).
        w_photo, w_landmark, w_identity, w_expression, w_gamma_mono: loss weights. The
            landmark term is the weighted mean squared distance in units of the image size.
    """

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=60, rampdown=0.3))
    lr_identity: float = 0.03
    lr_expression: float = 0.01
    lr_angles: float = 0.003
    lr_translation_m: float = 0.0005
    lr_gamma: float = 0.01
    lr_proxy: float = 0.02
    proxy_resolution: int = 8
    symmetric_proxy: bool = True
    w_photo: float = 1.0
    w_landmark: float = 200.0
    w_identity: float = 2e-4
    w_expression: float = 1e-3
    w_gamma_mono: float = 1.0


@dataclass
class ShapeFitConfig:
    """Stage 1: the landmark fit, then the photometric refinement (:mod:`fitting.shape`)."""

    landmarks: LandmarkFitConfig = field(default_factory=LandmarkFitConfig)
    refine: PhotometricShapeConfig = field(default_factory=PhotometricShapeConfig)
    render: RenderSettings = field(default_factory=RenderSettings)


@dataclass
class GlassesConfig:
    """Glasses frames kept out of the texture and the colour fits (:mod:`fitting.glasses`).

    Attributes:
        enabled: look for frames (needs FaceMesh points).
        contrast_window: side (pixels of the 512-px crop) of the median window a pixel's colour is compared
            with (a frame is thinner than half of it).
        ray_radii: from and to which distance of an eye's centre, in eye widths, rays look for a rim.
        ray_threshold: colour contrast (CIE76) a ray's peak needs to count.
        continuity: how close (eye widths) two neighbouring rays' peaks must lie to form a rim.
        min_share: share of the rays below and beside the eyes that must hold a rim for glasses.
        pixel_threshold: colour contrast of the frame's pixels (connected to a rim).
        zone_radius: radius (eye widths) of the ellipse round each eye that a frame may cover.
        temple_reach: how far (eye widths) from an eye's centre the frame's arm is followed.
        grow: pixels (of the 512-px crop) added round the frame (its soft edges and shadow).
    """

    enabled: bool = True
    contrast_window: int = 15
    ray_radii: list[float] = field(default_factory=lambda: [0.55, 1.3])
    ray_threshold: float = 10.0
    continuity: float = 0.1
    min_share: float = 0.5
    pixel_threshold: float = 5.0
    zone_radius: float = 1.45
    temple_reach: float = 3.0
    grow: int = 3


@dataclass
class UnwrapConfig:
    """Texture unwrapping (:mod:`fitting.unwrap`).

    Attributes:
        resolution: UV map side.
        facing_min, facing_full: cosine between normal and view direction at
            which confidence starts to rise from 0, and reaches 1.
        depth_tolerance_m: a texel is visible when it is at most this far (in
            metres) behind the rendered surface.
        min_shading: shading below this is clamped before dividing (keeps
            self-shadowed texels from exploding).
        mirror_weight: confidence given to a texel filled from its mirror, as
            a fraction of the mirror's own confidence.
        mask: which crop mask gates the confidence: ``parse`` (the face with
            brows, nose and lips, without eyes, inner mouth, hair, glasses and
            background: the features belong in an albedo map) or ``skin``
            (skin only; the features are then inpainted with skin colour).
        outlier_window: side (pixels of the 512-px crop) of the median window
            that photo pixels are compared with (glasses frames, hair strands
            and highlights are thinner than half of it); 0 keeps every pixel.
        outlier_dark: luminance / median ratios at which a darker texel's
            trust is 0 and 1 (:func:`fitting.unwrap.outlier_reliability`).
        outlier_bright: ratios at which a brighter texel's trust is 1 and 0.
        glasses: glasses frames found by their shape round the eyes, kept out with the outliers.
    """

    resolution: int = 512
    facing_min: float = 0.15
    facing_full: float = 0.6
    depth_tolerance_m: float = 0.004
    min_shading: float = 0.08
    mirror_weight: float = 0.8
    mask: str = "parse"
    outlier_window: int = 21
    outlier_dark: list[float] = field(default_factory=lambda: [0.45, 0.6])
    outlier_bright: list[float] = field(default_factory=lambda: [1.4, 1.8])
    glasses: GlassesConfig = field(default_factory=GlassesConfig)


@dataclass
class AlbedoFitConfig:
    """Stage 2: the coarse albedo from the UV albedo model (:mod:`fitting.albedo`).

    Attributes:
        optim: steps and learning-rate schedule.
        lr_albedo: Adam learning rate of the UVAPM coefficients (std units).
        lr_albedo_raw: the same for a model whose coefficients are in raw
            units (the paper's ``.pkl`` without standard deviations; the
            paper's own rate is 2.0); such a model also gets no prior.
        lr_gamma: Adam learning rate of the SH lighting.
        init_from_unwrap: start from the projection of the unwrapped photo
            texture (else from zero, the model's mean albedo).
        init_ridge: prior weight of that projection.
        weight_by_reliability: weight the photo's pixels in the colour terms by the
            unwrapping's pixel reliability (glasses frames, hair strands and
            highlights left out of the fit, as they are left out of the texture).
        w_photo, w_identity, w_perceptual, w_prior, w_gamma_mono: loss weights
            (the identity and perceptual terms apply only when their networks are loaded).
        unseen_fade: width, as a share of the map side, of the band over which the map's continuation
            past the texels the model varies fades to the map's skin tone (0: no fade, the border's colour
            continued everywhere).
    """

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=60, rampdown=0.25))
    lr_albedo: float = 0.05
    lr_albedo_raw: float = 2.0
    lr_gamma: float = 0.005
    init_from_unwrap: bool = True
    init_ridge: float = 1e-3
    weight_by_reliability: bool = True
    w_photo: float = 1.0
    w_identity: float = 0.2
    w_perceptual: float = 0.02
    w_prior: float = 1e-4
    w_gamma_mono: float = 1.0
    unseen_fade: float = 1 / 32


@dataclass
class DetailFitConfig:
    """Stage 3: the detail generator's latent (:mod:`fitting.detail`).

    Attributes:
        optim: steps and schedule.
        lr_latent: Adam learning rate of the latent.
        render_size: side of the crop the detail is compared with.
        high_pass_sigma: Gaussian sigma (pixels at ``render_size``) of the
            high-frequency band.
        w_photo, w_high_freq, w_perceptual: loss weights.
        w_prior: weight of the latent's N(0, I) prior per latent value
            (``sum(z^2) / 2`` divided by the latent size, so that the same
            weight suits a 500-d vector and a 16384-value latent grid).
        init_from_unwrap: start the latent from the generator's encoding of
            the unwrapped texture when it has one (zeros otherwise).
        weight_by_reliability: as in :class:`AlbedoFitConfig`.
        observed_detail: blend in what the photo shows where the unwrapping
            is confident.
        observed_band: what is blended: ``full`` (the unwrapped texture
            itself, all frequencies, colour-balanced to the models' albedo
            by one gain per channel, where it was seen; the coarse albedo
            with the generated detail plus the seen texels' residual
            continued smoothly where it was not) or ``high`` (only the texture's
            high-frequency detail, added to the coarse albedo; generators
            with additive detail).
        unseen_fade: width, as a share of the map side, of the band over which the seen texels' residual
            (``full``) fades to zero past what the photo showed and the UV model varies, leaving the coarse
            albedo's completion (0: the residual continued everywhere).
    """

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=15, rampdown=0.3))
    lr_latent: float = 0.05
    render_size: int = 512
    high_pass_sigma: float = 1.5
    w_photo: float = 1.0
    w_high_freq: float = 4.0
    w_perceptual: float = 0.02
    w_prior: float = 1e-2
    init_from_unwrap: bool = True
    weight_by_reliability: bool = True
    observed_detail: bool = True
    observed_band: str = "full"
    unseen_fade: float = 1 / 32


@dataclass
class OutputConfig:
    """What to write besides the standard outputs (:mod:`fitting.outputs`).

    Attributes:
        uv_1024: also write ``uv_albedo_1024.png``, the final albedo at 1024 texels with
            the photo's detail at that resolution (:mod:`fitting.high_resolution`).
        glb: also write ``mesh.glb`` (through trimesh).
    """

    uv_1024: bool = False
    glb: bool = True


#: Values of :attr:`FittingConfig.group_by`.
GROUP_BY = ("none", "folder", "all")


@dataclass
class FittingConfig:
    """Everything ``run_rgb_fitting.sh`` / ``python -m fitting.run`` can set (``configs/fitting.yaml``).

    Attributes:
        face_model: installed face model (``ict``, ``hifi3dpp``, ``bfm``).
        dense_points: where FaceMesh's points lie on the face model's surface;
            '' means ``checkpoints/default/facemesh_<face_model>.npz`` when it
            exists (without it, faces are fitted to their 68 points).
        light_prior: the light/skin prior that splits a face's mean colour
            between skin and scene light; '' means
            ``checkpoints/default/light_prior_<face_model>.npz`` when it exists
            (without it, the scene's colour and level are taken as skin).
        uvapm: UV albedo model file; '' means the default for the face model
            (``checkpoints/default/uvapm_<face_model>.npz``, or the official
            ``uv3dmm/model_256.pkl`` for hifi3dpp).
        detail_model: detail generator file; '' means
            ``checkpoints/default/detail_<face_model>.pt``, or the official
            ``detail_model/variational_autoencoder.pth`` for hifi3dpp.
        checkpoints_dir: folder of the official checkpoints.
        stages: which stages to run (1; 1, 2; or 1, 2, 3).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        batch_size: faces optimised together.
        seed: random seed (each batch is seeded with it).
        use_arcface, use_vgg: use the official networks when present.
        detail_crop_size: side of the crop re-warped from the photo for
            unwrapping and the detail stage.
        overwrite: redo faces (and their preprocessing) that are already complete.
        group_by: which photos show one person, fitted jointly (one identity and
            albedo, a pose, expression and light per photo; :mod:`fitting.groups`):
            ``none`` (every photo its own), ``folder`` (each subfolder of the input
            folder is one person; photos directly in it stay single) or ``all``
            (every photo of the input folder is one person).
    """

    face_model: str = "ict"
    dense_points: str = ""
    light_prior: str = ""
    uvapm: str = ""
    detail_model: str = ""
    checkpoints_dir: str = "checkpoints"
    stages: list[int] = field(default_factory=lambda: [1, 2, 3])
    device: str = "cpu"
    batch_size: int = 1
    seed: int = 123
    use_arcface: bool = True
    use_vgg: bool = True
    detail_crop_size: int = 512
    overwrite: bool = False
    group_by: str = "none"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    shape: ShapeFitConfig = field(default_factory=ShapeFitConfig)
    unwrap: UnwrapConfig = field(default_factory=UnwrapConfig)
    albedo: AlbedoFitConfig = field(default_factory=AlbedoFitConfig)
    detail: DetailFitConfig = field(default_factory=DetailFitConfig)
    outputs: OutputConfig = field(default_factory=OutputConfig)


@dataclass
class RenderConfig:
    """Options of ``render_3d_face.py`` (:mod:`fitting.views`, ``configs/render.yaml``).

    Attributes:
        face_model: installed face model of the reconstruction.
        views: camera yaw angles in degrees (positive: the camera moves to the face's left).
        pitch: camera pitch in degrees.
        light: a preset of :data:`models.config.LIGHT_PRESETS` or ``coeffs`` (the
            SH lighting fitted to the photo, from ``--coeffs``).
        shading: one of :data:`models.config.SHADING_MODES`.
        resolution: image side in pixels.
        turntable: '' (none), ``gif`` or ``mp4`` (needs imageio-ffmpeg).
        turntable_frames: frames of the 360-degree turntable.
        device: cpu, cuda or auto.
    """

    face_model: str = "ict"
    views: list[float] = field(default_factory=lambda: [-60.0, -30.0, 0.0, 30.0, 60.0])
    pitch: float = 0.0
    light: str = "studio"
    shading: str = "lit"
    resolution: int = 512
    turntable: str = ""
    turntable_frames: int = 36
    device: str = "cpu"
