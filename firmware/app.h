/*
 * The firmware main loop shared by every board: answer HELLO, run INFER requests through the
 * engine and reply over the board's serial port.
 */
#ifndef MCU_IDS_APP_H
#define MCU_IDS_APP_H

#ifdef __cplusplus
extern "C" {
#endif

/* Initialise the engine and the frame parser; call after platform_init(). */
void app_init(void);

/* Wait a short while for bytes, handle every frame they complete, and return. */
void app_poll(void);

/* platform_init(), app_init(), then app_poll() forever: all of a bare-metal board's firmware. */
void app_main(void);

#ifdef __cplusplus
}
#endif

#endif /* MCU_IDS_APP_H */
