"""The PyBullet world of one environment: bodies, contacts and cameras.

One ``p.DIRECT`` client per :class:`Scene`; every call passes ``physicsClientId``. Bodies are created once and
moved on :meth:`Scene.place`: obstacle shapes are cached per distinct size (scenario sizes are quantised, so the cache is
bounded) and parked below the floor when unused, so thousands of resets load nothing new.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from envs.bullet import p, pybullet_data, quiet_c_output
from envs.camera import camera_frame
from envs.rendering import load_egl
from envs.robot import RobotConfig
from envs.settings import PHYSICS_HZ
from envs.textures import texture_files
from foundations.errors import ConfigError
from scenarios import TARGET_SHAPES, ObstacleSpec, SceneSpec

ASSETS = Path(__file__).parent / "assets"
ROBOT_URDF = ASSETS / "omni_robot.urdf"
PARKED = (0.0, 0.0, -10.0)
#: Clip planes of both cameras (m). Our reading: near under the 0.05 m from the onboard lens to the robot's
#: footprint edge (``RobotConfig``: camera 0.10 m ahead of the centre, radius 0.15 m); far beyond any backdrop wall
#: seen from inside the arena (11.5 m at most) and the top-down camera's height (13.3 m at most, square or wider
#: renders).
NEAR, FAR = 0.03, 15.0
#: Vertical field of view of the top-down view (deg; :meth:`Scene.render_topdown`: videos, ``sim.preview``,
#: ``render()``). Our reading: no robot quantity, as no policy sees this view; narrow, so the camera (its height
#: fitted to frame the arena) stands high and box tops shift little against the floor-plane path overlay
#: (:meth:`Scene.topdown_projection`).
TOPDOWN_FOV = 30.0
#: The four visual-only backdrop walls around the arena (m): length, height, and how far outside the arena they
#: stand. Our reading: the team's arena was never measured (``ROBOT_AND_DATA.md`` section 4: "arena size ...
#: unknown (indoor floor)"); 12 m closes the corners of the largest arena plus both margins (9.4 m); 1.2 m stands
#: above everything in the scene (boxes at most 0.33 m high, the camera at 0.30 m), as the corridor's walls do;
#: the margin keeps them out of the robot's reach, since leaving the arena ends the episode first.
WALL_LENGTH, WALL_HEIGHT, WALL_MARGIN = 12.0, 1.2, 1.2
#: The backdrop walls' RGBA: an off-white indoor wall. Our reading: no colour was recorded for the 2025 set-up (the
#: V5/V6 corridor is "white wall", ``TEAM_STACK_2026.md`` section 1, and has its own ``wall_colour``); not randomised.
WALL_COLOUR = (0.86, 0.84, 0.80, 1.0)

#: Light colour, ambient and diffuse coefficients per collection ``time_period`` (H5 attribute).
LIGHTING = {
    "dawn": ((1.0, 0.86, 0.76), 0.50, 0.45),
    "morning": ((1.0, 1.0, 1.0), 0.60, 0.50),
    "evening": ((1.0, 0.78, 0.58), 0.45, 0.50),
    "night": ((0.75, 0.80, 0.95), 0.40, 0.35),
}
TARGET_COLOURS = {"cup": (0.80, 0.15, 0.12, 1), "bottle": (0.15, 0.55, 0.30, 1), "basket": (0.55, 0.56, 0.58, 1),
                  "laundry_basket": (0.52, 0.53, 0.55, 1)}


def target_half_height(kind: str) -> float:
    """Height of a target body's centre above the floor (m), from :data:`TARGET_SHAPES`."""
    geometry, *dims = TARGET_SHAPES[kind]
    return dims[2] if geometry == "box" else dims[1] / 2


class Scene:
    """PyBullet bodies and renderers for the box-avoidance arena.

    Args:
        robot: robot constants (camera mount, footprint).
        renderer: ``"tiny"`` or ``"egl"`` (:mod:`envs.rendering`); EGL is loaded before any body and falls back to
            tiny with a ``RuntimeWarning`` when the plugin cannot be loaded. :attr:`renderer_name` says which draws.
    """

    def __init__(self, robot: RobotConfig, renderer: str = "tiny") -> None:
        if renderer not in ("tiny", "egl"):
            raise ConfigError(f"renderer must be 'tiny' or 'egl', got {renderer!r}")
        self.robot = robot
        self.client = p.connect(p.DIRECT)
        cid = self.client
        self.renderer = p.ER_TINY_RENDERER
        self._egl_plugin = None
        if renderer == "egl":
            self._load_egl()
        p.setGravity(0, 0, 0, physicsClientId=cid)  # the base is velocity-driven; every other body is static
        p.setTimeStep(1.0 / PHYSICS_HZ, physicsClientId=cid)
        # The textures before the plane: PyBullet's EGL plugin applies a changed texture by its public id as its own
        # (bullet3 pull request #4805), and the two agree only when no URDF texture was registered before them.
        self.textures = {name: p.loadTexture(str(path), physicsClientId=cid) for name, path in texture_files().items()}
        self.plane = p.loadURDF(str(Path(pybullet_data.getDataPath()) / "plane.urdf"), physicsClientId=cid)
        self._names: dict[int, str] = {}
        self.walls = [self._make_wall() for _ in range(4)]
        self._shapes: dict[tuple, tuple[int, int]] = {}  # geometry -> (collision, visual) shape ids, stateless
        self.robot_id = self._make_robot()
        self._active: list[int] = []
        self._active_walls: list[int] = []
        self._active_target: int | None = None
        self._colours: dict[int, tuple[float, ...]] = {}
        self._floor: str | None = None
        self._spec: SceneSpec | None = None

    # ------------------------------------------------------------------ building
    def _load_egl(self) -> None:
        try:
            plugin = load_egl(self.client)
        except Exception as exc:  # noqa: BLE001 - any failure falls back to the CPU renderer
            warnings.warn(f"EGL renderer unavailable ({exc}); falling back to ER_TINY_RENDERER", RuntimeWarning, stacklevel=3)
            return
        self._egl_plugin = plugin
        self.renderer = p.ER_BULLET_HARDWARE_OPENGL

    def _make_robot(self) -> int:
        cid = self.client
        robot = p.loadURDF(str(ROBOT_URDF), [0, 0, 0], flags=p.URDF_USE_IMPLICIT_CYLINDER, physicsClientId=cid)
        p.changeDynamics(robot, -1, linearDamping=0, angularDamping=0, physicsClientId=cid)
        p.setCollisionFilterPair(self.plane, robot, -1, -1, 0, physicsClientId=cid)
        return robot

    def _shape(self, key: tuple, make: Callable[[], tuple[int, int]]) -> tuple[int, int]:
        if key not in self._shapes:
            self._shapes[key] = make()
        return self._shapes[key]

    def _make_target(self, kind: str) -> int:
        cid, colour = self.client, TARGET_COLOURS[kind]
        geometry, *dims = TARGET_SHAPES[kind]
        make = (lambda: self._box_shapes(tuple(dims), colour)) if geometry == "box" else \
            (lambda: self._cylinder_shapes(*dims, colour))
        col, vis = self._shape(("target", kind), make)
        body = p.createMultiBody(0, col, vis, basePosition=PARKED, physicsClientId=cid)
        self._names[body] = "target"
        return body

    def _box_shapes(self, half: tuple[float, ...], rgba: tuple[float, ...] | None = None) -> tuple[int, int]:
        cid, extra = self.client, {} if rgba is None else {"rgbaColor": rgba}
        return (p.createCollisionShape(p.GEOM_BOX, halfExtents=half, physicsClientId=cid),
                p.createVisualShape(p.GEOM_BOX, halfExtents=half, physicsClientId=cid, **extra))

    def _cylinder_shapes(self, radius: float, height: float, rgba: tuple[float, ...] | None = None) -> tuple[int, int]:
        cid, extra = self.client, {} if rgba is None else {"rgbaColor": rgba}
        return (p.createCollisionShape(p.GEOM_CYLINDER, radius=radius, height=height, physicsClientId=cid),
                p.createVisualShape(p.GEOM_CYLINDER, radius=radius, length=height, physicsClientId=cid, **extra))

    def _make_wall(self) -> int:
        """A visual-only wall panel (no collision shape: the arena bounds end the episode, not walls)."""
        vis = p.createVisualShape(
            p.GEOM_BOX, halfExtents=(0.05, WALL_LENGTH / 2, WALL_HEIGHT / 2), rgbaColor=WALL_COLOUR,
            physicsClientId=self.client,
        )
        return p.createMultiBody(0, -1, vis, basePosition=PARKED, physicsClientId=self.client)

    def _place_walls(self, spec: SceneSpec) -> None:
        x_min, x_max, y_min, y_max = spec.arena
        m = WALL_MARGIN
        cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2
        poses = [
            ((x_max + m, cy), 0.0), ((x_min - m, cy), 0.0),
            ((cx, y_max + m), math.pi / 2), ((cx, y_min - m), math.pi / 2),
        ]
        for body, ((x, y), yaw) in zip(self.walls, poses):
            orn = p.getQuaternionFromEuler((0, 0, yaw))
            p.resetBasePositionAndOrientation(body, (x, y, WALL_HEIGHT / 2), orn, physicsClientId=self.client)

    def _make_obstacle(self, obstacle: ObstacleSpec) -> int:
        """A static body for a box or a pot (upright cylinder of diameter ``size[0]``)."""
        size = tuple(round(v, 6) for v in obstacle.size)
        if obstacle.shape == "pot":
            col, vis = self._shape(("pot", *size), lambda: self._cylinder_shapes(size[0] / 2, size[2]))
        else:
            col, vis = self._shape(("box", *size), lambda: self._box_shapes(tuple(v / 2 for v in size)))
        return p.createMultiBody(0, col, vis, basePosition=PARKED, physicsClientId=self.client)

    def _renew_colliders(self, spec: SceneSpec) -> None:
        """Replace the robot, the boxes, the walls and the target by new bodies (see :meth:`place`)."""
        cid = self.client
        for body in (self.robot_id, *self._active, *self._active_walls, self._active_target):
            if body is not None:
                p.removeBody(body, physicsClientId=cid)
                self._names.pop(body, None)
                self._colours.pop(body, None)
        self.robot_id = self._make_robot()
        self._active = [self._make_obstacle(obstacle) for obstacle in spec.obstacles]
        self._active_walls = [self._make_obstacle(wall) for wall in spec.walls]
        self._active_target = self._make_target(spec.target_kind)

    # ------------------------------------------------------------------ episode
    def place(self, spec: SceneSpec) -> None:
        """Put the bodies of ``spec`` in place (boxes, target, robot at rest at its start), set the floor texture.

        The colliding bodies (robot, boxes, target) are created anew for every episode: Bullet keeps solver
        state per body pair (cached contact points, separating axes) that would otherwise make a collision depend
        on the episodes run before in the same env, and so on the worker that ran it.
        """
        cid = self.client
        self._renew_colliders(spec)
        named = [(f"obstacle_{i}", body, box) for i, (body, box) in enumerate(zip(self._active, spec.obstacles))]
        named += [("wall", body, wall) for body, wall in zip(self._active_walls, spec.walls)]
        for name, body, box in named:
            self._names[body] = name
            p.resetBasePositionAndOrientation(body, box.center, (0, 0, 0, 1), physicsClientId=cid)
            self._set_colour(body, (*box.colour, 1.0))
        z = target_half_height(spec.target_kind)
        p.resetBasePositionAndOrientation(self._active_target, (*spec.target_position, z), (0, 0, 0, 1),
                                          physicsClientId=cid)

        self._place_walls(spec)
        if spec.floor_texture != self._floor:
            p.changeVisualShape(self.plane, -1, textureUniqueId=self.textures[spec.floor_texture], physicsClientId=cid)
            self._floor = spec.floor_texture
        x, y, yaw = spec.start
        orn = p.getQuaternionFromEuler((0, 0, yaw))
        p.resetBasePositionAndOrientation(self.robot_id, (x, y, 0.0), orn, physicsClientId=cid)
        p.resetBaseVelocity(self.robot_id, (0, 0, 0), (0, 0, 0), physicsClientId=cid)
        self._spec = spec

    def _set_colour(self, body: int, rgba: tuple[float, ...]) -> None:
        if self._colours.get(body) != rgba:
            p.changeVisualShape(body, -1, rgbaColor=rgba, physicsClientId=self.client)
            self._colours[body] = rgba

    # ------------------------------------------------------------------ physics
    def drive(self, vx: float, vy: float, wz: float, yaw: float) -> None:
        """Set the base velocity from a body-frame command ``(vx, vy)`` m/s and yaw rate ``wz`` rad/s, the base
        heading being ``yaw`` rad."""
        c, s = math.cos(yaw), math.sin(yaw)
        p.resetBaseVelocity(self.robot_id, (c * vx - s * vy, s * vx + c * vy, 0.0), (0.0, 0.0, wz), physicsClientId=self.client)

    def step(self) -> None:
        """One physics step of ``1 / PHYSICS_HZ`` s."""
        p.stepSimulation(physicsClientId=self.client)

    def contact(self) -> str | None:
        """Name of a body the robot touches (``"obstacle_0"``, ``"obstacle_1"``, ``"target"``, ``"wall"``), or
        None."""
        for point in p.getContactPoints(bodyA=self.robot_id, physicsClientId=self.client):
            name = self._names.get(point[2])
            if name is not None:
                return name
        return None

    def robot_pose(self) -> tuple[float, float, float]:
        """``(x, y, yaw)`` of the base in the world frame (m, m, rad)."""
        pos, orn = p.getBasePositionAndOrientation(self.robot_id, physicsClientId=self.client)
        return float(pos[0]), float(pos[1]), float(p.getEulerFromQuaternion(orn)[2])

    # ------------------------------------------------------------------ cameras
    def _image(self, view, size: tuple[int, int], fov_v: float, spec: SceneSpec) -> np.ndarray:
        w, h = size
        proj = p.computeProjectionMatrixFOV(fov_v, w / h, NEAR, FAR, physicsClientId=self.client)
        colour, ambient, diffuse = LIGHTING[spec.time_period]
        # the EGL plugin printf()s its vendor (stdout) when it first draws a shadow map, on whichever frame that is:
        # stdout is silenced for every frame through it (microseconds against milliseconds of rendering); stderr,
        # where the other threads' logs and progress bars go, never is
        quiet = quiet_c_output((1,)) if self._egl_plugin is not None else contextlib.nullcontext()
        with quiet:
            img = self._camera_image(w, h, view, proj, spec, colour, ambient, diffuse)
        return np.asarray(img, dtype=np.uint8).reshape(h, w, 4)[:, :, :3].copy()

    def _camera_image(self, w, h, view, proj, spec, colour, ambient, diffuse):
        return p.getCameraImage(
            w, h, view, proj,
            renderer=self.renderer,
            flags=p.ER_NO_SEGMENTATION_MASK,
            lightDirection=spec.light_direction,
            lightColor=colour,
            lightAmbientCoeff=ambient,
            lightDiffuseCoeff=diffuse,
            lightSpecularCoeff=0.05,
            shadow=0,
            physicsClientId=self.client,
        )[2]

    def render_onboard(self, spec: SceneSpec, size: tuple[int, int]) -> np.ndarray:
        """Onboard camera image, uint8 ``(H, W, 3)`` RGB, from the mount in :class:`RobotConfig` plus the
        scene's camera jitter (:func:`envs.camera.camera_frame`: the pinhole model the corridor family and the
        grounders project with). The horizontal FOV is kept; the vertical one follows the aspect ratio."""
        cam = camera_frame(self.robot, self.robot_pose(), spec.camera_offset)
        view = p.computeViewMatrix(cam.eye.tolist(), (cam.eye + cam.forward).tolist(), cam.up.tolist(),
                                   physicsClientId=self.client)
        w, h = size
        fov_v = math.degrees(2 * math.atan(math.tan(cam.hfov / 2) * h / w))
        return self._image(view, size, fov_v, spec)

    @property
    def renderer_name(self) -> str:
        """The renderer that draws this scene's images: ``"tiny"`` or ``"egl"`` (after any fallback)."""
        return "egl" if self.renderer == p.ER_BULLET_HARDWARE_OPENGL else "tiny"

    @staticmethod
    def _topdown_camera(spec: SceneSpec, size: tuple[int, int]) -> tuple[float, float, float]:
        """Centre ``(x, y)`` and height (m) of a camera looking straight down that frames the arena."""
        x_min, x_max, y_min, y_max = spec.arena
        if spec.walls:  # show the walls that bound the arena
            y_min, y_max = min(w.center[1] - w.size[1] / 2 for w in spec.walls), max(w.center[1] + w.size[1] / 2
                                                                                     for w in spec.walls)
        w, h = size
        half_h = math.tan(math.radians(TOPDOWN_FOV / 2))
        height = max((y_max - y_min) / 2 / half_h, (x_max - x_min) / 2 / (half_h * w / h)) * 1.02
        return (x_min + x_max) / 2, (y_min + y_max) / 2, height

    def render_topdown(self, spec: SceneSpec, size: tuple[int, int]) -> np.ndarray:
        """Top-down view of the whole arena (+x to the right, +y up), uint8 ``(H, W, 3)`` RGB."""
        cx, cy, height = self._topdown_camera(spec, size)
        view = p.computeViewMatrix((cx, cy, height), (cx, cy, 0.0), (0, 1, 0), physicsClientId=self.client)
        return self._image(view, size, TOPDOWN_FOV, spec)

    @classmethod
    def topdown_projection(cls, spec: SceneSpec, size: tuple[int, int]):
        """Function mapping world ``(x, y)`` (m, on the floor) to pixel ``(u, v)`` in :meth:`render_topdown`
        images, for drawing paths over them."""
        cx, cy, height = cls._topdown_camera(spec, size)
        w, h = size
        metres_per_px = 2 * height * math.tan(math.radians(TOPDOWN_FOV / 2)) / h

        def project(x: float, y: float) -> tuple[float, float]:
            return w / 2 + (x - cx) / metres_per_px, h / 2 - (y - cy) / metres_per_px

        return project

    def close(self) -> None:
        """Disconnect the PyBullet client (idempotent)."""
        if self.client is not None and p.isConnected(self.client):
            with quiet_c_output():
                if self._egl_plugin is not None:
                    p.unloadPlugin(self._egl_plugin, physicsClientId=self.client)
                p.disconnect(self.client)
        self.client = None
